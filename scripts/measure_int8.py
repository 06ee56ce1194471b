"""int8 for Real-ESRGAN x4plus on OpenVINO (issue 19, stretch): NNCF post-training quantization in
several configurations, each scored against the float32 model, and timed against ncnn.

Quality, one CPU (the process pins itself to one core, so NNCF's own inference uses one thread too):
the float32 IR the product converts (``utils.runtimes.ir_cache``, the same key and file) is quantized
with ``nncf.quantize`` in each configuration of ``CONFIGS``, calibrated on LR crops of BSD68, and run
on Set14: LR = PIL bicubic ×1/4 of the modcropped HR, centre crop of at most ``--crop``² LR pixels, the
matching HR crop as reference. Per configuration: PSNR (RGB, outputs clamped to [0, 1], not rounded)
of the int8 output against the float32 output, mean and worst image; and LPIPS (alex) of the int8
output against HR minus that of float32, averaged over the images. The int8 IRs are saved under
``weights/int8-measure/`` (git-ignored) for the speed part.

Speed, at the end, two threads (a child process, not pinned): one 128² input, ncnn float32 (the
packaged files), OpenVINO float32, bfloat16 where the CPU plugin lists BF16, and each int8 IR; the
runtimes take turns within each repeat; median seconds and the ratio to ncnn.

Needs NNCF, which the product does not (int8 is not offered): ``.venv/bin/pip install nncf==3.4.0``.

    .venv/bin/python -m scripts.measure_int8                       # every configuration, then speed
    .venv/bin/python -m scripts.measure_int8 --only mixed trunk --no-speed
    .venv/bin/python -m scripts.measure_int8 --speed               # speed of the IRs already saved
"""
from __future__ import annotations

import os

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402

from datapipe.image_io import list_images  # noqa: E402
from utils.config import WEIGHTS_DIR  # noqa: E402
from utils.evaluation.datasets import DATASETS_ROOT, load_rgb, make_lr, modcrop  # noqa: E402

SCALE = 4
SAVE_DIR = WEIGHTS_DIR / "int8-measure"
RESULTS = SAVE_DIR / "results.jsonl"
# Node names of x4plus in the IR (spandrel's ESRGAN: model.0 conv_first, model.1.sub.0-22 the RRDB
# blocks, model.1.sub.23 conv_body, model.3/6/8/10 conv_up1, conv_up2, conv_hr, conv_last).
CONV_FIRST = "__module.model.0/aten::_convolution/Convolution"
CONV_BODY = "__module.model.1.sub.23/aten::_convolution/Convolution"
TAIL = tuple(f"__module.model.{i}/aten::_convolution/Convolution" for i in (3, 6, 8, 10))
CONV_LAST = TAIL[-1]


@dataclass(frozen=True)
class Config:
    """One way to quantize: ``options`` builds nncf.quantize's keyword arguments (nncf is imported
    late, so the list can be read without it)."""

    label: str
    key: str                      # file name of the saved IR, and --only's name
    crops: int | None = None      # calibration crops; None: --calib-count
    options: Callable[[], dict] = field(default=lambda: {})
    int8_blocks: int | None = None  # int8 only in the first N RRDB blocks, every other convolution float


def _mixed(**extra) -> Callable[[], dict]:
    def build():
        import nncf

        return {"preset": nncf.QuantizationPreset.MIXED, **{k: v() if callable(v) else v for k, v in extra.items()}}
    return build


def _ignored(*names: str) -> Callable[[], object]:
    def build():
        import nncf

        return nncf.IgnoredScope(names=list(names))
    return build


def _residual_float() -> object:
    import nncf

    return nncf.IgnoredScope(patterns=list(RESIDUAL_PATTERNS))


def _advanced(**kwargs) -> Callable[[], object]:
    def build():
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

        return AdvancedQuantizationParameters(**{k: v() if callable(v) else v for k, v in kwargs.items()})
    return build


def _overflow_fix_all():
    from nncf.quantization.advanced_parameters import OverflowFix

    return OverflowFix.ENABLE


def _smooth_quant_convolutions():
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters

    return AdvancedSmoothQuantParameters(convolution=0.5, matmul=-1)


def _transformer():
    import nncf

    return nncf.ModelType.TRANSFORMER


# The residual path: every RDB's and RRDB's "0.2 × out + in" and the trunk's skip. NNCF puts
# FakeQuantize on these eltwise ops too (180 of the 446), and ignoring convolutions leaves them in.
RESIDUAL_PATTERNS = (r".*/aten::add/Add", r".*/aten::mul/Multiply")
TRUNK_ONLY = (CONV_FIRST, CONV_BODY, *TAIL)  # everything outside the 23 RRDB blocks stays float
# In the order they run: the cheapest and most telling first. fast_bias_correction=False is not among
# them: NNCF's full BiasCorrection on the trunk-only configuration grew to 22.5 GB and was killed by the
# kernel on this 24 GB machine after 7 minutes (50 crops of 48², so 10 for bias correction).
CONFIGS = [
    Config("defaults, 10 crops (as in the issue)", "default10", 10),
    Config("defaults, more crops", "default"),
    Config("preset MIXED (asymmetric activations)", "mixed", options=_mixed()),
    Config("MIXED, only the RRDB trunk int8 (conv_first, conv_body, upsampling tail float)", "trunk",
           options=_mixed(ignored_scope=_ignored(*TRUNK_ONLY))),
    Config("MIXED, conv_first + conv_last float", "mixed_ends",
           options=_mixed(ignored_scope=_ignored(CONV_FIRST, CONV_LAST))),
    Config("trunk only, weights 7-bit everywhere (overflow_fix ENABLE)", "trunk_overflow",
           options=_mixed(ignored_scope=_ignored(*TRUNK_ONLY),
                          advanced_parameters=_advanced(overflow_fix=_overflow_fix_all))),
    Config("trunk only, SmoothQuant on convolutions α 0.5 (model_type TRANSFORMER)", "trunk_smoothquant",
           options=_mixed(ignored_scope=_ignored(*TRUNK_ONLY), model_type=_transformer,
                          advanced_parameters=_advanced(smooth_quant_alphas=_smooth_quant_convolutions))),
    Config("MIXED, residual adds and scales float (only convolutions int8)", "residual",
           options=_mixed(ignored_scope=_residual_float)),
    Config("residual float + SmoothQuant on convolutions α 0.5", "residual_smoothquant",
           options=_mixed(ignored_scope=_residual_float, model_type=_transformer,
                          advanced_parameters=_advanced(smooth_quant_alphas=_smooth_quant_convolutions))),
    # How the error grows with the int8 share: if each block adds its own, k of 23 blocks lose
    # 10·log10(23/k) dB less than all of them.
    Config("MIXED, int8 in RRDB blocks 1–4 only (4 of 23)", "blocks4", options=_mixed(), int8_blocks=4),
    Config("MIXED, int8 in RRDB block 1 only (1 of 23)", "blocks1", options=_mixed(), int8_blocks=1),
]


def outside_blocks(model, count: int) -> list[str]:
    """Names of the convolutions outside the first ``count`` RRDB blocks. The IR lists them in order:
    conv_first, each block's 15 (its three RDBs' conv1-5; conv5 is renamed Multiply_N once OpenVINO
    folds the 0.2 residual scale into it), conv_body and the four of the tail."""
    from utils.backends.rrdbnet import NUM_BLOCK

    convs = [op.get_friendly_name() for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    per_block = (len(convs) - 6) // NUM_BLOCK
    return [convs[0], *convs[1 + per_block * count:]]


# --- data ----------------------------------------------------------------------------------------

def to_input(rgb: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], np.float32) / 255


def evaluation_pairs(folder: Path, crop: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, LR input 1×3×h×w, HR reference h×4 × w×4 × 3 in [0, 1]): the centre ≤ crop² of the LR."""
    pairs = []
    for path in list_images(folder):
        hr = modcrop(load_rgb(path), SCALE)
        lr = make_lr(hr, SCALE)
        h, w = min(crop, lr.shape[0]), min(crop, lr.shape[1])
        top, left = (lr.shape[0] - h) // 2, (lr.shape[1] - w) // 2
        ref = hr[SCALE * top:SCALE * (top + h), SCALE * left:SCALE * (left + w)]
        pairs.append((path.stem, to_input(lr[top:top + h, left:left + w]), ref.astype(np.float32) / 255))
    return pairs


def calibration_crops(folder: Path, count: int, size: int) -> list[np.ndarray]:
    """``count`` LR crops (PIL bicubic ×1/4) of ``size``²: every image's centre first, then its
    bottom-right corner, so a small count still spreads over many images."""
    lrs = [make_lr(modcrop(load_rgb(p), SCALE), SCALE) for p in list_images(folder)]
    crops = []
    for where in ("centre", "corner"):
        for lr in lrs:
            h, w = lr.shape[:2]
            top, left = ((h - size) // 2, (w - size) // 2) if where == "centre" else (h - size, w - size)
            crops.append(to_input(lr[top:top + size, left:left + size]))
    if count > len(crops):
        raise SystemExit(f"{folder} gives {len(crops)} calibration crops, fewer than {count}")
    return crops[:count]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


# --- quality -------------------------------------------------------------------------------------

def float32_ir() -> Path:
    """The float32 IR of x4plus exactly as the product makes and caches it (converted if missing)."""
    from utils.backends.rrdbnet import load_rrdbnet, packaged_model_files
    from utils.backends.runtime_net import openvino_conversion
    from utils.runtimes import ir_cache

    files = packaged_model_files()
    conversion = openvino_conversion("Real-ESRGAN x4plus", files, lambda d, t: load_rrdbnet(d, t, source=files))
    xml = ir_cache.ir_path(conversion, "float32")
    if not xml.is_file():
        print(f"converting x4plus to {xml} ...", flush=True)
        ir_cache.convert(conversion, xml)
    return xml


def run_all(compiled, inputs: list[np.ndarray]) -> list[np.ndarray]:
    request = compiled.create_infer_request()
    out = []
    for x in inputs:
        y = request.infer([x])[compiled.outputs[0]]
        out.append(np.clip(y[0].transpose(1, 2, 0), 0, 1))
    return out


class LpipsScorer:
    def __init__(self):
        import torch

        from utils.evaluation.lpips_offline import build_lpips

        self.torch, self.model = torch, build_lpips("alex")

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        def t(a):
            return self.torch.from_numpy(a).permute(2, 0, 1)[None] * 2 - 1
        with self.torch.no_grad():
            return float(self.model(t(img), t(ref)))


def quality(args) -> None:
    import nncf
    import openvino as ov

    from utils.runtimes import ov_core

    core, xml = ov_core.core(), float32_ir()
    f32_config = ov_core.compile_config("float32")  # the project's compile settings: 1 thread here
    pairs = evaluation_pairs(args.datasets / args.eval_set, args.crop)
    names, inputs, refs = zip(*pairs)
    lpips = LpipsScorer()
    start = time.perf_counter()
    reference = run_all(core.compile_model(str(xml), "CPU", f32_config), list(inputs))
    f32_lpips = [lpips(y, r) for y, r in zip(reference, refs)]
    print(f"float32: {args.eval_set} {len(pairs)} images, LR centre crops ≤ {args.crop}², "
          f"LPIPS vs HR {np.mean(f32_lpips):.4f}, {time.perf_counter() - start:.0f} s", flush=True)
    most = max(c.crops or args.calib_count for c in CONFIGS)
    crops = calibration_crops(args.datasets / args.calibration_set, most, args.calib_size)
    SAVE_DIR.mkdir(parents=True, exist_ok=True)
    print("| configuration | FQ nodes | dB from f32 (mean / worst) | ΔLPIPS | quantize s | eval s |", flush=True)
    print("|---|---|---|---|---|---|", flush=True)
    for config in CONFIGS:
        if args.only and config.key not in args.only:
            continue
        model = core.read_model(str(xml))
        start = time.perf_counter()
        count = config.crops or args.calib_count
        options = config.options()
        if config.int8_blocks:
            options["ignored_scope"] = nncf.IgnoredScope(names=outside_blocks(model, config.int8_blocks))
        quantized = nncf.quantize(model, nncf.Dataset(crops[:count]), subset_size=count, **options)
        quantize_s = time.perf_counter() - start
        ov.save_model(quantized, str(SAVE_DIR / f"{config.key}.xml"), compress_to_fp16=False)
        start = time.perf_counter()
        out = run_all(core.compile_model(quantized, "CPU", f32_config), list(inputs))
        eval_s = time.perf_counter() - start
        db = [psnr(y, r) for y, r in zip(out, reference)]
        delta = float(np.mean([lpips(y, r) for y, r in zip(out, refs)]) - np.mean(f32_lpips))
        worst = names[int(np.argmin(db))]
        row = {"key": config.key, "crops": count, "label": config.label, "db_mean": float(np.mean(db)),
               "db_min": min(db), "worst": worst, "dlpips": delta, "fake_quantize": count_ops(quantized, "FakeQuantize"),
               "quantize_s": quantize_s}
        with RESULTS.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        print(f"| {config.label} | {row['fake_quantize']} | {row['db_mean']:.2f} / {row['db_min']:.2f} ({worst}) | "
              f"{delta:+.4f} | {quantize_s:.0f} | {eval_s:.0f} |", flush=True)


def count_ops(model, kind: str) -> int:
    return sum(op.get_type_name() == kind for op in model.get_ordered_ops())


# --- speed ---------------------------------------------------------------------------------------

def speed(args) -> None:
    from utils.backends.ncnn_net import load_net
    from utils.backends.rrdbnet import packaged_model_files
    from utils.devices import set_threads
    from utils.runtimes import ov_core

    threads = set_threads(2)
    rgb = load_rgb(args.datasets / args.speed_image)
    top, left = (rgb.shape[0] - 128) // 2, (rgb.shape[1] - 128) // 2
    x = to_input(rgb[top:top + 128, left:left + 128])
    net = load_net(*packaged_model_files(), threads)
    core, xml = ov_core.core(), float32_ir()

    def ov_runner(model, precision: str):
        compiled = core.compile_model(model, "CPU", ov_core.compile_config(precision))
        request = compiled.create_infer_request()
        return lambda: request.infer([x])

    runs = {"ncnn float32": lambda: net(x[0]), "OpenVINO float32": ov_runner(str(xml), "float32")}
    if "BF16" in ov_core.capabilities():
        runs["OpenVINO bfloat16"] = ov_runner(str(xml), "bfloat16")
    else:
        print(f"OpenVINO bfloat16: not timed, the CPU plugin lists {list(ov_core.capabilities())} (no BF16; "
              "a bf16 hint compiles as f32 here)")
    for saved in sorted(SAVE_DIR.glob("*.xml")):
        if not args.only or saved.stem in args.only:
            runs[f"OpenVINO int8 {saved.stem}"] = ov_runner(str(saved), "float32")
    for run in runs.values():  # warm-up: allocations, kernel choice
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["ncnn float32"])
    print(f"speed: {args.speed_image} centre crop 128², {threads} threads, {args.repeats} interleaved repeats, "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("| runtime | median s | vs ncnn f32 |")
    print("|---|---|---|")
    for name, ts in times.items():
        print(f"| {name} | {statistics.median(ts):.2f} | {statistics.median(ts) / base:.2f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=[c.key for c in CONFIGS], help="these configurations only")
    parser.add_argument("--speed", action="store_true", help="only the speed part, of the IRs already saved")
    parser.add_argument("--no-speed", action="store_true", help="only the quality part")
    parser.add_argument("--datasets", type=Path, default=DATASETS_ROOT)
    parser.add_argument("--eval-set", default="Set14")
    parser.add_argument("--calibration-set", default="BSD68")
    parser.add_argument("--crop", type=int, default=64, help="side of the Set14 LR centre crops")
    parser.add_argument("--calib-count", type=int, default=50, help="calibration crops (but the 10-crop row)")
    parser.add_argument("--calib-size", type=int, default=48, help="side of the calibration LR crops")
    parser.add_argument("--speed-image", default="Set5/butterfly.png")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.speed:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))  # undo a parent's pinning
        speed(args)
        return
    # One core for quantization and quality: NNCF compiles its own models with OpenVINO's default
    # thread count, which follows the process's CPU affinity.
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[-1]})
    from utils.devices import set_threads

    set_threads(1)
    quality(args)
    if not args.no_speed:
        argv = [a for a in sys.argv[1:] if a != "--no-speed"]
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--speed", *argv], check=True)


if __name__ == "__main__":
    main()
