"""Time Real-ESRGAN x4plus in ncnn (float32) against PyTorch (float32 and bfloat16, channels_last).

The engines take turns within each repeat, so a load from elsewhere on the machine hits them alike.
Prints the median seconds per engine, its ratio to ncnn, and its PSNR against the ncnn output.

    .venv/bin/python scripts/measure_realesrgan_engines.py [--image PATH] [--size 128] [--repeats 3]
"""
from __future__ import annotations

import os

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import ncnn  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from datapipe.image_io import read_image  # noqa: E402
from utils.backends.realesrgan import packaged_model_files  # noqa: E402
from utils.backends.rrdbnet import load_rrdbnet, upscale  # noqa: E402
from utils.devices import cpu_has_fast_bf16, set_threads  # noqa: E402
from utils.evaluation.datasets import DATASETS_ROOT  # noqa: E402

DEFAULT_IMAGE = DATASETS_ROOT / "Set5" / "butterfly.png"


def ncnn_engine(threads: int):
    param, weights = packaged_model_files()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.opt.num_threads = threads
    net.load_param(str(param))
    net.load_model(str(weights))

    def run(chw: np.ndarray) -> np.ndarray:
        ex = net.create_extractor()
        ex.input("data", ncnn.Mat(chw))
        _, out = ex.extract("output")
        return np.array(out)

    return run


def torch_engine(dtype: torch.dtype):
    model = load_rrdbnet("cpu", dtype)
    return lambda chw: upscale(model, torch.from_numpy(chw)[None])[0].numpy()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, default=128, help="side of the centre crop")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    rgb = read_image(args.image).rgb
    top, left = (rgb.shape[0] - args.size) // 2, (rgb.shape[1] - args.size) // 2
    chw = np.ascontiguousarray(rgb[top:top + args.size, left:left + args.size].transpose(2, 0, 1))
    threads = set_threads()
    engines = {
        "ncnn fp32": ncnn_engine(threads),
        "torch fp32 channels_last": torch_engine(torch.float32),
        "torch bf16 channels_last": torch_engine(torch.bfloat16),
    }
    print(f"{platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}, "
          f"ncnn {ncnn.__version__}, fast (AMX) bf16: {cpu_has_fast_bf16()}")
    print(f"input: {args.image.name} centre crop {chw.shape[2]}×{chw.shape[1]}, {args.repeats} repeats")
    outputs = {name: run(chw) for name, run in engines.items()}  # warm-up: allocations, kernel choice
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(args.repeats):
        for name, run in engines.items():
            start = time.perf_counter()
            run(chw)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["ncnn fp32"])
    reference = outputs["ncnn fp32"]
    print(f"{'engine':26} {'median s':>9} {'vs ncnn':>8} {'PSNR vs ncnn dB':>16}  all runs (s)")
    for name, runs in times.items():
        median = statistics.median(runs)
        runs_text = " ".join(f"{t:.2f}" for t in runs)
        print(f"{name:26} {median:9.2f} {median / base:7.2f}× {psnr(outputs[name], reference):16.1f}  "
              f"{runs_text}")


if __name__ == "__main__":
    main()
