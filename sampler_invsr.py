"""The reference InvSR API (``InvSamplerSR(configs).sample_func`` / ``.inference``) over the studio's
library: the models come from the InvSR backend, files go through the same batch layer as the CLI
(limits, per-file errors, resume records, no name collisions).

    sampler = InvSamplerSR(load_config())          # raises WeightsNotFound with instructions
    sr = sampler.sample_func(lr)                   # b×3×h×w tensor in [0, 1] -> b×4h×4w×3 array
    sampler.inference("photos/", "out/")           # every image of a folder, PNG
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import torch
from omegaconf import DictConfig

from utils.backends import load_backend
from utils.backends.invsr.weights import resolve_weights
from utils.batch.naming import plan_paths
from utils.batch.runner import process_batch
from utils.config import with_overrides
from utils.pipeline.chain import bicubic_reference
from utils.settings import RunSettings
from utils.postprocess.color_fix import color_fix


class InvSamplerSR:
    """InvSR sampler configured by an OmegaConf object (configs/sample-sd-turbo.yaml), never mutated.

    Construction validates the config, resolves the weights locally (raising
    :class:`utils.backends.invsr.weights.WeightsNotFound` with instructions when they are missing)
    and loads the models once per process.
    """

    def __init__(self, configs: DictConfig):
        self.configs = configs
        self.settings = RunSettings.from_config(configs, "invsr")
        resolve_weights(configs)  # WeightsNotFound (with what to do) rather than a generic unavailability
        self.backend = load_backend("invsr", configs)

    @property
    def device(self) -> torch.device:
        return self.backend.models.device

    def sample_func(self, im_lq: torch.Tensor) -> np.ndarray:
        """b×3×h×w tensor in [0, 1] -> b×4h×4w×3 float32 numpy array in [0, 1], colour-fixed per the
        config against the unpadded input."""
        lr = _check_image(im_lq).float().cpu()
        sr = self.backend.upscale(lr, self.settings)
        if self.settings.color_fix != "none":
            sr = color_fix(sr, bicubic_reference(lr, tuple(sr.shape[-2:])), self.settings.color_fix)
        return sr.permute(0, 2, 3, 1).numpy()

    def inference(self, in_path, out_path, bs: Optional[int] = None) -> list[Path]:
        """Upscale one image file or every image in a folder into ``out_path`` as PNG, through the
        batch layer. ``bs``: patches per model call. Returns the written (or already up-to-date)
        paths; raises ValueError naming every file that failed."""
        configs = self.configs if bs is None else with_overrides(self.configs, {"basesr.chopping.extra_bs": bs})
        settings = RunSettings.from_config(with_overrides(configs, {"output.format": "png"}), "invsr")
        in_path, out_path = Path(in_path), Path(out_path)
        items = process_batch(plan_paths(in_path, out_path, "png"), self.backend, settings,
                              errors_log=out_path / "errors.log")
        failed = [i.reason for i in items if i.status == "error"]
        if failed:
            raise ValueError("; ".join(failed))
        return [i.output for i in items if i.output is not None]


def _check_image(im: torch.Tensor) -> torch.Tensor:
    if not isinstance(im, torch.Tensor):
        raise ValueError(f"expected a torch tensor b×3×h×w in [0, 1], got {type(im).__name__}")
    if im.ndim != 4 or im.shape[1] != 3:
        raise ValueError(f"expected an RGB batch b×3×h×w, got shape {tuple(im.shape)}"
                         + (" (convert grayscale/RGBA images to RGB first)" if im.ndim == 4 else ""))
    if not im.is_floating_point():
        raise ValueError(f"expected float pixel values in [0, 1], got dtype {im.dtype}")
    if im.shape[0] == 0 or min(im.shape[-2:]) < 2:
        raise ValueError(f"image too small: {im.shape[-2]}×{im.shape[-1]} (needs at least 2×2 pixels)")
    return im
