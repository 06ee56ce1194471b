"""Measure the post-processing stages with the Real-ESRGAN backend on benchmark images.

Chopping: fixed grids (50 % overlap as InvSR, 25 % as the Real-ESRGAN config) against smart_grid,
with the plain Gaussian window and the attention window: patches, model input pixels (the cost,
independent of machine load), wall and process CPU time, PSNR/SSIM to the HR image and RGB PSNR to the
unchopped (one-call) output, from the MSE averaged over the images (single-patch images add 0).
Then every colour fix and the fusion with bicubic on the unchopped output. Metrics: Y of BT.601
YCbCr (16–235), ``sf`` pixels cropped per border. Run single-threaded on a busy machine:

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python scripts/measure_postprocessing.py \
        [--tile 64] [--images Set5/baby Set14/zebra ...]
"""
from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2ycbcr
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from utils.backends.realesrgan import RealESRGANBackend
from utils.config import load_config, with_overrides
from utils.evaluation.datasets import DATASETS_ROOT
from utils.postprocess.color_fix import color_fix, hybrid_color_fix
from utils.postprocess.complexity import image_complexity
from utils.postprocess.fusion import fuse
from utils.tiling.chopping import PatchGrid, blend_patches
from utils.tiling.smart_chopping import attention_window, smart_grid
DEFAULT_IMAGES = [
    "Set5/baby", "Set5/bird", "Set5/butterfly", "Set5/head", "Set5/woman",
    "Set14/baboon", "Set14/barbara", "Set14/comic", "Set14/lenna", "Set14/monarch", "Set14/ppt3", "Set14/zebra",
]
SF = 4


def load_pair(name: str) -> tuple[np.ndarray, torch.Tensor]:
    """HR uint8 h×w×3 RGB cropped to a multiple of 4, and its ×4 bicubic (OpenCV) LR as 1×3×h×w."""
    hr = cv2.cvtColor(cv2.imread(str(DATASETS_ROOT / f"{name}.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    hr = hr[: hr.shape[0] // SF * SF, : hr.shape[1] // SF * SF]
    lr = cv2.resize(hr, (hr.shape[1] // SF, hr.shape[0] // SF), interpolation=cv2.INTER_CUBIC)
    return hr, torch.from_numpy(lr).permute(2, 0, 1)[None].float() / 255.0


def y_metrics(sr: torch.Tensor, hr: np.ndarray) -> tuple[float, float]:
    """(PSNR dB, SSIM) on Y (16–235) with the border cropped, as in the SR literature."""
    rgb = (sr[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255.0).round()
    y_sr = rgb2ycbcr(rgb / 255.0)[SF:-SF, SF:-SF, 0]
    y_hr = rgb2ycbcr(hr / 255.0)[SF:-SF, SF:-SF, 0]
    psnr = peak_signal_noise_ratio(y_hr, y_sr, data_range=255)
    ssim = structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return float(psnr), float(ssim)


def mse_to(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).pow(2).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tile", type=int, default=64, help="patch size in LR pixels")
    ap.add_argument("--images", nargs="*", default=DEFAULT_IMAGES, help="dataset/name without .png")
    args = ap.parse_args()
    cfg = with_overrides(load_config(), {"realesrgan.tile_size": args.tile})
    backend = RealESRGANBackend(cfg)
    pch = args.tile

    chop = {  # name -> (grid builder, window)
        "fixed 50% (InvSR)": (lambda lr: PatchGrid.regular(*lr.shape[-2:], pch, pch // 2), None),
        "fixed 25%": (lambda lr: PatchGrid.regular(*lr.shape[-2:], pch, pch - pch // 4), None),
        "smart 25-50%": (lambda lr: smart_grid(lr, pch), None),
        "smart + attention window": (lambda lr: smart_grid(lr, pch), attention_window()),
    }
    fixes = ["none", "ycbcr", "wavelet", "histogram", "hybrid", "hybrid-best"]
    stats: dict[str, dict[str, list[float]]] = {}

    def add(table: str, key: str, *values: float) -> None:
        stats.setdefault(table, {}).setdefault(key, []).append(values)

    for name in args.images:
        hr, lr = load_pair(name)
        print(f"{name}: LR {lr.shape[-1]}×{lr.shape[-2]}, complexity {image_complexity(lr).item():.3f}", flush=True)
        whole = backend._patch(lr)  # one call on the whole image: the seam-free reference
        for key, (make, window) in chop.items():
            t0, c0 = time.perf_counter(), time.process_time()
            grid = make(lr)
            out = blend_patches(lr, backend._patch, grid, SF, window=window)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            pixels = len(grid) * grid.height * grid.width
            add("chop", key, len(grid), pixels, wall, cpu, *y_metrics(out, hr), mse_to(out, whole))
        h, w = whole.shape[-2:]
        ref = F.interpolate(lr, size=(h, w), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        for fix in fixes:
            t0 = time.perf_counter()
            out = hybrid_color_fix(whole, ref, "best") if fix == "hybrid-best" else color_fix(whole, ref, fix)
            add("color", fix, time.perf_counter() - t0, *y_metrics(out, hr))
        add("fusion", "Real-ESRGAN", *y_metrics(whole, hr))
        add("fusion", "bicubic", *y_metrics(ref, hr))
        for method in ("weighted", "max"):
            add("fusion", f"fuse {method}", *y_metrics(fuse([whole, ref], method), hr))

    n = len(args.images)
    print(f"\nMeans over {n} images, tile {pch} LR px, Y-channel PSNR/SSIM (16-235, {SF}-px border crop)\n")
    print("| chopping | patches | model input px | wall s | CPU s | PSNR dB | SSIM | PSNR to unchopped dB |")
    print("|---|---|---|---|---|---|---|---|")
    for key, rows in stats["chop"].items():
        a = np.array(rows)
        print(f"| {key} | {a[:, 0].sum():.0f} | {a[:, 1].sum():.0f} | {a[:, 2].sum():.1f} | {a[:, 3].sum():.1f} | "
              f"{a[:, 4].mean():.3f} | {a[:, 5].mean():.4f} | {10 * np.log10(1 / a[:, 6].mean()):.2f} |")
    print("\n| color fix | time ms/image | PSNR dB | SSIM |\n|---|---|---|---|")
    for key, rows in stats["color"].items():
        a = np.array(rows)
        print(f"| {key} | {1000 * a[:, 0].mean():.1f} | {a[:, 1].mean():.3f} | {a[:, 2].mean():.4f} |")
    print("\n| fusion (candidates: Real-ESRGAN, bicubic) | PSNR dB | SSIM |\n|---|---|---|")
    for key, rows in stats["fusion"].items():
        a = np.array(rows)
        print(f"| {key} | {a[:, 0].mean():.3f} | {a[:, 1].mean():.4f} |")


if __name__ == "__main__":
    main()
