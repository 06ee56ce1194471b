"""Context-margin tiling against one whole-image forward: PSNR, compute and time, per backend.

For each backend the input is upscaled once whole (the reference) and then in tiles of a fixed
core size with each context margin; PSNR is against the whole-image result (RGB, [0, 1]), compute
is the tiled input pixels over the image's pixels. Two earlier tilers are measured alongside: the
balanced grid with 32 px overlap and Gaussian blending that this project used before, and the
reference Real-ESRGAN tiler (10 px of padding, cropped, no blending = margin 10, no feather).
``--sizes`` prints the compute of the default settings for a range of image sizes (no model runs).

    .venv/bin/python scripts/measure_tiling.py --backends span,waifu2x --core 64 --margins 0,8,16,24
    .venv/bin/python scripts/measure_tiling.py --backends realesrgan --defaults --image Set14/barbara.png --crop 480
    .venv/bin/python scripts/measure_tiling.py --sizes 256,512,1024,2048
"""
from __future__ import annotations

import os

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from datapipe.image_io import read_image  # noqa: E402
from utils.backends import load_backend  # noqa: E402
from utils.config import load_config, with_overrides  # noqa: E402
from utils.evaluation.datasets import DATASETS_ROOT  # noqa: E402
from utils.pipeline.chain import to_tensor  # noqa: E402
from utils.settings import TILED_BACKENDS, RunSettings  # noqa: E402
from utils.tiling.chopping import FEATHER, PatchGrid, blend_patches, context_grid, context_window  # noqa: E402

OLD_OVERLAP = 32      # the balanced Gaussian-blended grid this project used before
REFERENCE_PAD = 10    # the reference Real-ESRGAN tiler's tile_pad


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def compute(grid: PatchGrid, h: int, w: int) -> float:
    return len(grid) * grid.height * grid.width / (h * w)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def margin_table(backend, settings: RunSettings, lr: torch.Tensor, core: int, margins: list[int]) -> None:
    h, w = lr.shape[-2:]
    scale = settings.native_scale()
    whole, whole_s = timed(lambda: backend._patch(lr, scale))
    print(f"\n{backend.name} ×{scale}: {w}×{h} input, whole-image forward {whole_s:.2f} s; tiles of {core} px core")
    print("| tiling | margin (px) | PSNR vs whole (dB) | compute | time |")
    print("|---|---|---|---|---|")
    old = PatchGrid.balanced(h, w, core, OLD_OVERLAP)
    out, secs = timed(lambda: blend_patches(lr, lambda x: backend._patch(x, scale), old, scale))
    print(f"| before: balanced {core} px, {OLD_OVERLAP} px overlap, Gaussian | – | {psnr(out, whole):.1f} | "
          f"{compute(old, h, w):.2f}× | {secs / whole_s:.2f}× |")
    rows = [(f"reference tiler ({REFERENCE_PAD} px pad, crop)", REFERENCE_PAD, 0)]
    rows += [(f"context crop + {FEATHER} px feather", m, FEATHER) for m in margins]
    for label, margin, feather in rows:
        grid = context_grid(h, w, core, margin, feather)
        window = context_window(grid, h, w, margin, scale, feather)
        out, secs = timed(lambda: blend_patches(lr, lambda x: backend._patch(x, scale), grid, scale, window=window))
        print(f"| {label} | {margin} | {psnr(out, whole):.1f} | {compute(grid, h, w):.2f}× | {secs / whole_s:.2f}× |")


def defaults_row(backend, settings: RunSettings, lr: torch.Tensor) -> None:
    h, w = lr.shape[-2:]
    settings = settings.for_input(h, w)
    scale, margin = settings.native_scale(), settings.tile_margin
    whole, whole_s = timed(lambda: backend._patch(lr, scale))
    tiled, secs = timed(lambda: backend.upscale(lr, settings))
    grid = context_grid(h, w, settings.tile_size, margin)
    print(f"| {backend.name} | {w}×{h} | {settings.tile_size} | {margin} | {len(grid)} | {psnr(tiled, whole):.1f} | "
          f"{compute(grid, h, w):.2f}× | {secs / whole_s:.2f}× |")


def sizes_table(cfg, sizes: list[int]) -> None:
    print("| backend | tile_size | margin | " + " | ".join(f"{s}²" for s in sizes) + " | worst 64–2048 |")
    print("|---|---|---|" + "---|" * (len(sizes) + 1))
    for name in TILED_BACKENDS:
        settings = RunSettings.from_config(cfg, name).for_input(2048, 2048)
        margin = settings.tile_margin
        ratio = lambda s: compute(context_grid(s, s, settings.tile_size, margin), s, s)  # noqa: E731
        worst = max(range(64, 2049, 8), key=ratio)
        print(f"| {name} | {settings.tile_size} | {margin} | " + " | ".join(f"{ratio(s):.2f}×" for s in sizes)
              + f" | {ratio(worst):.2f}× ({worst}²) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="span,realesrgan-anime,waifu2x,realesrgan")
    parser.add_argument("--image", default="Set14/baboon.png", help="under ../shared/datasets, or a path")
    parser.add_argument("--crop", type=int, nargs="+", default=[96, 128], help="height [width] of the top-left crop")
    parser.add_argument("--core", type=int, default=64)
    parser.add_argument("--margins", default="0,4,8,12,16,24,32,48")
    parser.add_argument("--outscale", type=float, default=4)
    parser.add_argument("--defaults", action="store_true", help="one row per backend at the config's settings")
    parser.add_argument("--sizes", help="compute of the default settings for these square sizes")
    args = parser.parse_args()

    cfg = with_overrides(load_config(), {"outscale": args.outscale, "color_fix": "none"})
    if args.sizes:
        sizes_table(cfg, [int(s) for s in args.sizes.split(",")])
        return
    path = DATASETS_ROOT / args.image if not os.path.isfile(args.image) else args.image
    ch, cw = args.crop[0], args.crop[-1]
    lr = to_tensor(read_image(path).rgb[:ch, :cw])
    torch.set_grad_enabled(False)
    if args.defaults:
        print("| backend | input | tile_size | margin | tiles | PSNR vs whole (dB) | compute | time |")
        print("|---|---|---|---|---|---|---|---|")
    for name in args.backends.split(","):
        backend = load_backend(name, cfg)
        settings = RunSettings.from_config(cfg, name)
        if args.defaults:
            defaults_row(backend, settings, lr)
        else:
            margin_table(backend, settings, lr, args.core, [int(m) for m in args.margins.split(",")])


if __name__ == "__main__":
    main()
