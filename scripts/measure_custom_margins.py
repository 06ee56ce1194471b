"""Context margins for users' models: tiled result vs one whole-image forward, per architecture class.

Each model file goes through the custom backend (the users' path) at each margin, with 32-px tile
cores on the top-left ``--crop``² of Set14 baboon, ×scale, tiles aligned as the backend aligns them;
PSNR is RGB against spandrel's whole-image forward of the same file. SPAN and Compact use the
packaged trained weights (span ×4, realesr-animevideov3); the others spandrel's own classes at their
published sizes with random weights (PyTorch's default initialisation): trained weights were not
available offline, so treat those rows as a lower bound on how far the architecture reaches.

    PYTHONPATH=. .venv/bin/python scripts/measure_custom_margins.py --margins 0,8,16,24,32,48,64
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede importing torch

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from spandrel.architectures.OmniSR import OmniSR  # noqa: E402
from spandrel.architectures.PLKSR import RealPLKSR  # noqa: E402
from spandrel.architectures.SAFMN import SAFMN  # noqa: E402
from spandrel.architectures.SwinIR import SwinIR  # noqa: E402

from datapipe.image_io import read_image  # noqa: E402
from utils.backends import load_backend  # noqa: E402
from utils.backends.torch_nets import packaged_torch_net  # noqa: E402
from utils.config import load_config, with_overrides  # noqa: E402
from utils.evaluation.datasets import DATASETS_ROOT  # noqa: E402
from utils.pipeline.chain import to_tensor  # noqa: E402
from utils.settings import RunSettings  # noqa: E402

MODELS = {
    "SPAN x4 (packaged, trained)": lambda: packaged_torch_net("span", "spanx4_ch48"),
    "Compact x4 (animevideov3, trained)": lambda: packaged_torch_net("realesrgan-anime",
                                                                     "REALESRGAN_ANIMAVIDEOV3_UP4X"),
    "SwinIR-light x4 (random)": lambda: SwinIR(img_size=64, embed_dim=60, depths=[6, 6, 6, 6],
                                               num_heads=[6, 6, 6, 6], window_size=8, mlp_ratio=2, upscale=4,
                                               upsampler="pixelshuffledirect"),
    "OmniSR x4 (random)": lambda: OmniSR(num_feat=64, block_num=1, window_size=8, res_num=5, up_scale=4),
    "SAFMN x4 (random)": lambda: SAFMN(dim=36, n_blocks=8, upscaling_factor=4),
    "RealPLKSR x4 (random)": lambda: RealPLKSR(dim=64, n_blocks=28, upscaling_factor=4),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--margins", default="0,8,16,24,32,48,64")
    p.add_argument("--core", type=int, default=32)
    p.add_argument("--crop", type=int, default=192)
    p.add_argument("--only", default=None, help="comma-separated substrings of the model names to run")
    args = p.parse_args()
    margins = [int(m) for m in args.margins.split(",")]
    lr = to_tensor(read_image(DATASETS_ROOT / "Set14" / "baboon.png").rgb[:args.crop, :args.crop])
    cfg = load_config()
    print(f"| model | margin {' | '.join(str(m) for m in margins)} | default margin | alignment | "
          "s per whole forward |")
    print(f"|---|{'---|' * len(margins)}---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for name, make in MODELS.items():
            if args.only and not any(part in name for part in args.only.split(",")):
                continue
            torch.manual_seed(0)
            path = Path(folder) / f"{name.split()[0]}.safetensors"
            save_file({k: v.contiguous() for k, v in make().state_dict().items()}, str(path))
            run = with_overrides(cfg, {"backend": "custom", "custom.model_path": str(path), "color_fix": "none",
                                       "custom.tile_size": args.core, "precision": "float32"})
            backend = load_backend("custom", run)
            start = time.perf_counter()
            whole = backend._patch(lr, backend.scale)
            seconds = time.perf_counter() - start
            cells = []
            for margin in margins:
                settings = RunSettings.from_config(with_overrides(run, {"custom.tile_margin": margin}), "custom")
                cells.append(f"{psnr(backend.upscale(lr, settings), whole):.1f}")
            spec = RunSettings.from_config(run, "custom").spec
            print(f"| {name} | {' | '.join(cells)} | {spec.context_margin} | {spec.size_multiple} | "
                  f"{seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
