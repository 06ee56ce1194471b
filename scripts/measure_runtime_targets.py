"""Issue 19's "done when" figures through the command line, interleaved on a shared machine.

- Real-ESRGAN x4plus and SPAN ×4, 256² input: the CLI's "N s per image" with ``--runtime auto`` against
  one direct ncnn forward of the same image (net loaded once, this process), and the auto output's PSNR
  against the CLI's ``--runtime ncnn`` output (same settings otherwise).
- InvSR, 128² input, with the weights given (SD-Turbo's full architecture with random weights,
  ``utils.training.tiny_sd.build_random_sd_turbo``): "N s per image" of ``--runtime auto`` and of
  ``--runtime openvino --precision float32`` against ``--runtime torch --precision float32``. The first auto run converts the models (once) unless cached.

    PYTHONPATH=. .venv/bin/python scripts/measure_runtime_targets.py --repeats 3 \
        --sd_path /tmp/sd-turbo-random --started_ckpt_path /tmp/noise_predictor_random.pth
"""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from utils.backends.fast_models import SpanBackend
from utils.backends.ncnn_net import load_net, package_models_dir
from utils.backends.rrdbnet import packaged_model_files
from utils.config import PROJECT_ROOT
from utils.devices import set_threads, thread_count
from utils.evaluation.benchmark import source_image

PER_IMAGE = re.compile(r"([0-9.]+) s per image")


def cli_seconds(src: Path, dst: Path, *args: str) -> float:
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "inference_invsr.py"), "-i", str(src), "-o", str(dst),
                          "--overwrite", *args], capture_output=True, text=True)
    found = PER_IMAGE.search(res.stderr)
    if res.returncode != 0 or not found:
        raise RuntimeError(f"CLI failed: {res.stderr[-2000:]}")
    return float(found.group(1))


def psnr(a: Path, b: Path) -> float:
    x, y = (np.asarray(Image.open(p).convert("RGB"), np.float64) / 255 for p in (a, b))
    return float(10 * np.log10(1 / np.mean((x - y) ** 2)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sd_path")
    p.add_argument("--started_ckpt_path")
    p.add_argument("--skip-realesrgan", action="store_true", help="no Real-ESRGAN figure")
    p.add_argument("--span", action="store_true", help="SPAN ×4 as well")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="srtargets-"))
    src256, src128 = tmp / "in256.png", tmp / "in128.png"
    Image.fromarray(source_image(256)).save(src256)
    Image.fromarray(source_image(128)).save(src128)

    set_threads()
    if not args.skip_realesrgan:
        measure_against_ncnn("Real-ESRGAN", "realesrgan", load_net(*packaged_model_files(), thread_count()),
                             src256, tmp, args.repeats)
    if args.span:
        folder = package_models_dir(SpanBackend.package, SpanBackend.requirement)
        net = load_net(folder / "spanx4_ch48.param", folder / "spanx4_ch48.bin", thread_count(),
                       SpanBackend.input_blob, SpanBackend.output_blob)
        measure_against_ncnn("SPAN ×4", "span", net, src256, tmp, args.repeats)
    if args.sd_path and args.started_ckpt_path:
        measure_invsr(src128, tmp, args.repeats, args.sd_path, args.started_ckpt_path)


def measure_against_ncnn(title: str, backend: str, net, src256: Path, tmp: Path, repeats: int) -> None:
    """``backend``'s CLI with ``--runtime auto`` against ``net``, its ncnn model, run directly."""
    chw = np.ascontiguousarray(source_image(256).transpose(2, 0, 1), np.float32) / 255
    net(chw)  # warm-up
    runs = {"cli auto": [], "direct ncnn": []}
    auto_png, ncnn_png = tmp / f"{backend}-auto.png", tmp / f"{backend}-ncnn.png"
    cli_seconds(src256, auto_png, "--backend", backend, "--runtime", "auto")  # IR in the cache
    for _ in range(repeats):
        runs["cli auto"].append(cli_seconds(src256, auto_png, "--backend", backend, "--runtime", "auto"))
        start = time.perf_counter()
        net(chw)
        runs["direct ncnn"].append(time.perf_counter() - start)
    cli_seconds(src256, ncnn_png, "--backend", backend, "--runtime", "ncnn")
    auto, ncnn = statistics.median(runs["cli auto"]), statistics.median(runs["direct ncnn"])
    print(f"{title} 256²: CLI --runtime auto {auto:.2f} s per image (runs {runs['cli auto']}), direct ncnn "
          f"{ncnn:.2f} s (runs {[round(s, 2) for s in runs['direct ncnn']]}): {auto / ncnn:.2f}×; "
          f"{psnr(auto_png, ncnn_png):.1f} dB from the CLI's ncnn output", flush=True)


def measure_invsr(src128: Path, tmp: Path, repeats: int, sd_path: str, ckpt: str) -> None:
    weights = ["--backend", "invsr", "--sd_path", sd_path, "--started_ckpt_path", ckpt]
    # OpenVINO float32 as well: what auto would take on a CPU with AVX-512 but no BF16.
    variants = {"auto": ["--runtime", "auto"], "torch float32": ["--runtime", "torch", "--precision", "float32"],
                "openvino float32": ["--runtime", "openvino", "--precision", "float32"]}
    for extra in (variants["auto"], variants["openvino float32"]):  # conversions, if any, stay out
        cli_seconds(src128, tmp / "warm.png", *weights, *extra)
    invsr = {name: [] for name in variants}
    for _ in range(repeats):
        for name, extra in variants.items():
            invsr[name].append(cli_seconds(src128, tmp / f"invsr_{name.split()[0]}.png", *weights, *extra))
    t = statistics.median(invsr["torch float32"])
    for name in ("auto", "openvino float32"):
        a = statistics.median(invsr[name])
        print(f"InvSR 128² (SD-Turbo architecture): CLI {' '.join(variants[name])} {a:.2f} s per image "
              f"(runs {invsr[name]}), "
              f"torch float32 {t:.2f} s (runs {invsr['torch float32']}): {a / t:.2f}×", flush=True)


if __name__ == "__main__":
    main()
