"""Validation on held-out HR images: their degraded inputs are fixed once (seeded per image), then at
every check the EMA predictor runs through the sampler's own whole-image path (chopping, blending,
colour fix) and PSNR (Y), LPIPS (AlexNet) and NIQE are recorded.

    <save_dir>/val/inputs/NAME_lq.png, NAME_gt.png     once
    <save_dir>/val/step_0005000/NAME.png               every check
    <save_dir>/val_metrics.csv                         step, psnr, lpips, niqe (means over the images)
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig

from datapipe.image_io import LoadedImage, list_images, read_image, write_image
from utils.backends.invsr.models import InvSRModels
from utils.backends.invsr.sampling import upscale
from utils.config import load_config, with_overrides
from utils.evaluation.metrics import LPIPS, psnr_y
from utils.pipeline.chain import bicubic_reference, to_array, to_tensor
from utils.settings import RunSettings
from utils.postprocess.color_fix import color_fix
from utils.training.data import center_crop
from utils.training.degradation import DegradationParams, degrade
from utils.training.metrics_log import CsvLog

VAL_FIELDS = ("step", "psnr", "lpips", "niqe", "images")
# Keeps the validation inputs' random streams apart from the training samples' (seed, index) streams.
VAL_STREAM = 0x5A1


@dataclasses.dataclass(frozen=True)
class ValImage:
    name: str
    lq: torch.Tensor   # 1×3×h×w float32 in [0, 1]
    gt: np.ndarray     # 4h×4w×3 float32 in [0, 1]


def build_val_images(folder: Path, max_images: int, crop_size: int, params: DegradationParams,
                     seed: int) -> list[ValImage]:
    """Centre crops of the first ``max_images`` images of ``folder`` and their degraded inputs."""
    files = list_images(folder, recursive=True)[:max_images]
    if not files:
        raise ValueError(f"validation.dir {folder}: no images")
    images = []
    for i, path in enumerate(files):
        gt = center_crop(read_image(path).rgb, crop_size)
        lq = degrade(gt, params, np.random.default_rng((seed, VAL_STREAM, i)))
        images.append(ValImage(path.stem, to_tensor(lq), gt))
    return images


def _lpips_or_none() -> Optional[LPIPS]:
    try:
        return LPIPS()
    except (FileNotFoundError, ValueError, KeyError) as exc:
        warnings.warn(f"validation: LPIPS unavailable ({exc}); recording PSNR only", UserWarning, stacklevel=2)
        return None


def niqe_scorer() -> Optional[Callable[[np.ndarray], float]]:
    """utils.evaluation.niqe's scorer (NaN for images under two 96×96 blocks), or None with a warning
    when its pristine model is not installed."""
    from utils.evaluation.niqe import ImageTooSmall, load_params, niqe

    try:
        model = load_params()
    except (FileNotFoundError, ValueError) as exc:
        warnings.warn(f"validation: NIQE unavailable ({exc})", UserWarning, stacklevel=2)
        return None

    def score(img: np.ndarray) -> float:
        try:
            return niqe(img, crop_border=0, model=model)
        except ImageTooSmall:
            return math.nan
    return score


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


class Validator:
    """Runs the checks of the ``validation`` config section into ``save_dir``."""

    def __init__(self, val_cfg: DictConfig, params: DegradationParams, seed: int, save_dir: Path):
        self.images = build_val_images(Path(val_cfg.dir), int(val_cfg.max_images), int(val_cfg.crop_size),
                                       params, seed)
        sample_cfg = with_overrides(load_config(), {
            "timesteps": list(val_cfg.timesteps), "seed": seed, "color_fix": val_cfg.color_fix,
            "basesr.chopping.pch_size": int(val_cfg.patch_size)})
        self.settings = RunSettings.from_config(sample_cfg, "invsr")
        self.lpips = _lpips_or_none()
        self.niqe = niqe_scorer()
        self.out_dir = Path(save_dir) / "val"
        self.log = CsvLog(Path(save_dir) / "val_metrics.csv", VAL_FIELDS)
        self._write_inputs()

    def _write_inputs(self) -> None:
        folder = self.out_dir / "inputs"
        for im in self.images:
            write_image(folder / f"{im.name}_lq.png", LoadedImage(to_array(im.lq)))
            write_image(folder / f"{im.name}_gt.png", LoadedImage(im.gt))

    def super_resolve(self, models: InvSRModels, lq: torch.Tensor) -> np.ndarray:
        """What the sampler would output for ``lq`` with these models: H×W×3 float32 in [0, 1]."""
        sr = upscale(models, lq, self.settings)
        if self.settings.color_fix != "none":
            sr = color_fix(sr, bicubic_reference(lq, tuple(sr.shape[-2:])), self.settings.color_fix)
        return to_array(sr)

    def run(self, models: InvSRModels, ema_predictor: torch.nn.Module, step: int) -> dict[str, float]:
        """Score ``ema_predictor`` (in place of the trained one); writes the images and one CSV row."""
        models = dataclasses.replace(models, noise_predictor=ema_predictor)
        psnrs, lpipses, niqes = [], [], []
        for im in self.images:
            sr = self.super_resolve(models, im.lq)
            write_image(self.out_dir / f"step_{step:07d}" / f"{im.name}.png", LoadedImage(sr))
            psnrs.append(psnr_y(sr, im.gt, crop=4))
            lpipses.append(self.lpips(sr, im.gt) if self.lpips is not None else math.nan)
            niqes.append(self.niqe(sr) if self.niqe is not None else math.nan)
        row = {"step": step, "psnr": _mean(psnrs), "lpips": _mean(lpipses), "niqe": _mean(niqes),
               "images": len(self.images)}
        self.log.write(row)
        return row
