"""Speed and quality of the fast backends against Real-ESRGAN x4plus and bicubic.

Speed: every model upscales the same centre crop; the models take turns within each repeat, so a
load from elsewhere on the machine hits them alike. Prints the median seconds and the ratio to
x4plus. Quality: PSNR-Y (BT.601, border of the scale cropped) on a dataset whose LR inputs are
bicubic ×1/scale of the HR images cropped to a multiple of the scale, against bicubic upscaling
(torch's, as the bicubic backend does it).

    .venv/bin/python scripts/measure_fast_models.py --speed --size 256 --repeats 3
    .venv/bin/python scripts/measure_fast_models.py --quality --dataset Set14
"""
from __future__ import annotations

import os

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from datapipe.image_io import list_images  # noqa: E402
from utils.backends import load_backend  # noqa: E402
from utils.config import load_config, with_overrides  # noqa: E402
from utils.devices import set_threads  # noqa: E402
from utils.evaluation.datasets import DATASETS_ROOT, load_rgb, make_lr, modcrop  # noqa: E402
from utils.evaluation.metrics import psnr_y  # noqa: E402
from utils.settings import RunSettings  # noqa: E402

# (label, backend, native scale, config overrides)
MODELS = [
    ("Real-ESRGAN x4plus (ncnn)", "realesrgan", 4, {"runtime": "ncnn"}),
    ("SPAN ×4", "span", 4, {}),
    ("SPAN ×2", "span", 2, {}),
    ("realesr-animevideov3 ×4", "realesrgan-anime", 4, {}),
    ("waifu2x photo ×2 (denoise 0)", "waifu2x", 2, {}),
    ("waifu2x photo ×4 (two passes, denoise 0)", "waifu2x", 4, {}),
    ("bicubic", "bicubic", 4, {}),
]


def runner(cfg, name: str, scale: int, overrides: dict):
    cfg = with_overrides(cfg, {"outscale": scale, "color_fix": "none", **overrides})
    backend, settings = load_backend(name, cfg), RunSettings.from_config(cfg, name)
    return lambda lr: backend.upscale(lr, settings)


def to_tensor_u8(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None]


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


def speed(cfg, image: str, size: int, repeats: int) -> None:
    rgb = load_rgb(DATASETS_ROOT / image)
    top, left = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
    lr = to_tensor_u8(rgb[top:top + size, left:left + size])
    runs = {label: runner(cfg, name, scale, extra) for label, name, scale, extra in MODELS}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for run in runs.values():  # warm-up: allocations, kernel choice
        run(lr)
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run(lr)
            times[label].append(time.perf_counter() - start)
    base = statistics.median(times[MODELS[0][0]])
    print(f"{image} centre crop {size}×{size}, {repeats} interleaved repeats, median seconds")
    print("| model | seconds | vs x4plus |")
    print("|---|---|---|")
    for label, ts in times.items():
        print(f"| {label} | {statistics.median(ts):.2f} | {statistics.median(ts) / base:.3f}× |")


def quality(cfg, dataset: str, with_x4plus: bool) -> None:
    paths = list_images(DATASETS_ROOT / dataset)
    print(f"{dataset} ({len(paths)} images), PSNR-Y in dB, LR = bicubic ×1/scale of the modcropped HR")
    print("| model | scale | PSNR-Y | bicubic | gain | images better than bicubic |")
    print("|---|---|---|---|---|---|")
    models = [m for m in MODELS if m[1] != "bicubic" and (with_x4plus or m[1] != "realesrgan")]
    for label, name, scale, extra in models:
        run = runner(cfg, name, scale, extra)
        ours, base = [], []
        for path in paths:
            hr = modcrop(load_rgb(path), scale)
            lr = to_tensor_u8(make_lr(hr, scale))
            ours.append(psnr_y(to_u8(run(lr)), hr, scale))
            # The bicubic backend's interpolation, at this scale.
            up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
            base.append(psnr_y(to_u8(up), hr, scale))
        gain = np.mean(ours) - np.mean(base)
        better = sum(o > b for o, b in zip(ours, base))
        print(f"| {label} | ×{scale} | {np.mean(ours):.2f} | {np.mean(base):.2f} | {gain:+.2f} | "
              f"{better}/{len(paths)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--quality", action="store_true")
    parser.add_argument("--image", default="Set14/baboon.png", help="speed: under ../shared/datasets")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dataset", default="Set14")
    parser.add_argument("--with-x4plus", action="store_true", help="quality: score x4plus too (slow)")
    args = parser.parse_args()
    set_threads()
    torch.set_grad_enabled(False)
    cfg = load_config()
    if args.speed:
        speed(cfg, args.image, args.size, args.repeats)
    if args.quality:
        quality(cfg, args.dataset, args.with_x4plus)


if __name__ == "__main__":
    main()
