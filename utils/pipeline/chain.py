"""The one place that turns an input image into the final result, for the CLI, the app and the API.

Order (the seed project's): complexity → adaptive scheduler / guidance (InvSR; complexity only when
one of them is on) → backend with (smart) chopping → color fix → attention fusion → edge enhancement →
output scale, each stage switched by the run's :class:`~utils.settings.RunSettings`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from datapipe.image_io import LoadedImage
from utils.backends import Backend
from utils.config import SCALE
from utils.pipeline.limits import check_limits
from utils.settings import RunSettings
from utils.postprocess.adaptive_scheduler import adaptive_timesteps
from utils.postprocess.color_fix import color_fix
from utils.postprocess.complexity import image_complexity
from utils.postprocess.enhancement import enhance_edges
from utils.postprocess.fusion import fuse
from utils.postprocess.guidance import adaptive_guidance
from utils.tiling.chopping import ProgressFn


class Cancelled(Exception):
    """Raised from a progress callback to stop between patches; nothing is written."""


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 float32 [0,1] -> 1×3×H×W."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()


def to_array(x: torch.Tensor) -> np.ndarray:
    """1×3×H×W -> H×W×3 float32 [0,1]."""
    return x[0].permute(1, 2, 0).float().cpu().numpy()


def bicubic_reference(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic upsampling of the input, the colour fix's reference. Not clamped: bicubic
    overshoots [0, 1] at hard edges, and InvSR's colour fix uses those values and clamps only after.
    Clamp it for display ('before' image) or as an image of its own (fusion's fallback)."""
    return F.interpolate(lr, size, mode="bicubic", align_corners=False, antialias=True)


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Final resize of the native result; antialiased so downscaling does not alias."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def resize_alpha(alpha: Optional[np.ndarray], size: tuple[int, int]) -> Optional[np.ndarray]:
    """H×W alpha in [0,1] resized (bicubic) to ``size``; transparency is not super-resolved."""
    if alpha is None:
        return None
    return resize_to(torch.from_numpy(alpha)[None, None].float(), size)[0, 0].numpy()


@dataclass
class RunInfo:
    backend: str
    device: str
    input_size: tuple[int, int]   # (width, height)
    output_size: tuple[int, int]
    seconds: float = 0.0
    color_fix: str = "none"
    timesteps: Optional[list[int]] = None
    complexity: Optional[float] = None
    stages: list[str] = field(default_factory=list)  # post-processing that ran, for the summary
    notes: list[str] = field(default_factory=list)   # warnings about the input or the settings
    scale: int = SCALE            # the backend's native scale for this run (×2 models for outscale ≤ 2)
    runtime: str = ""             # e.g. "openvino bfloat16"

    def summary(self) -> str:
        parts = [f"{self.backend} ×{self.scale} on {self.device}" + (f" ({self.runtime})" if self.runtime else ""),
                 f"{self.input_size[0]}×{self.input_size[1]} → {self.output_size[0]}×{self.output_size[1]}",
                 f"color fix {self.color_fix}", f"{self.seconds:.2f} s"]
        if self.timesteps:
            parts.insert(1, f"timesteps {self.timesteps}")
        if self.complexity is not None:
            parts.insert(1, f"complexity {self.complexity:.2f}")
        return " · ".join(parts + self.stages + self.notes)


def adapt_settings(settings: RunSettings, complexity: float) -> tuple[RunSettings, list[str], list[str]]:
    """InvSR's settings with the adaptive scheduler / guidance applied for this image, plus the stages
    that ran and warnings."""
    changes, stages, notes = {}, [], []
    if settings.adaptive_scheduler:
        changes["timesteps"] = tuple(adaptive_timesteps(complexity, list(settings.timesteps)))
        stages.append("adaptive scheduler")
    if settings.adaptive_guidance:
        if settings.cfg_scale > 1:
            changes["cfg_scale"] = adaptive_guidance(settings.cfg_scale, complexity)
            stages.append(f"guidance {changes['cfg_scale']:.2f}")
        else:
            notes.append("adaptive guidance idle: cfg_scale ≤ 1 means no guidance to adapt")
    return settings.replace(**changes), stages, notes


def run_pipeline(lr: torch.Tensor, backend: Backend, settings: RunSettings,
                 progress: Optional[ProgressFn] = None) -> tuple[torch.Tensor, RunInfo]:
    """1×3×h×w float32 [0,1] -> (1×3×H×W float32 [0,1], RunInfo) with H×W = outscale·(h×w)."""
    if lr.ndim != 4 or lr.shape[0] != 1 or lr.shape[1] != 3:
        raise ValueError(f"expected a 1×3×h×w RGB tensor, got shape {tuple(lr.shape)}")
    if settings.backend != backend.name:
        raise ValueError(f"settings made for {settings.backend} cannot run on {backend.name}")
    h, w = lr.shape[-2:]
    settings = settings.for_input(h, w)
    scale = settings.native_scale()
    oh, ow = check_limits(h, w, scale, settings)
    start = time.perf_counter()
    complexity, timesteps, notes, stages = None, None, [], []
    if backend.name == "invsr":
        # Only InvSR's adaptive stages use it; elsewhere it would cost a sixth of a fast model's forward.
        if settings.adaptive_scheduler or settings.adaptive_guidance:
            complexity = float(image_complexity(lr).mean())
            settings, stages, notes = adapt_settings(settings, complexity)
        timesteps = list(settings.timesteps)
    sr = backend.upscale(lr, settings, progress)
    if settings.color_fix != "none" or settings.attention_fusion:
        reference = bicubic_reference(lr, tuple(sr.shape[-2:]))
        if settings.color_fix != "none":
            sr = color_fix(sr, reference, settings.color_fix)
        if settings.attention_fusion:
            sr = fuse([sr, reference.clamp(0, 1)], settings.fusion_method)
            stages.append(f"fusion {settings.fusion_method}")
    if settings.edge_enhancement > 0:
        sr = enhance_edges(sr, settings.edge_enhancement)
        stages.append(f"edges {settings.edge_enhancement:.2f}")
    if settings.smart_chopping:
        stages.append("smart chopping")
    sr = resize_to(sr, (oh, ow))
    info = RunInfo(backend.name, backend.device, (w, h), (ow, oh), time.perf_counter() - start, settings.color_fix,
                   timesteps=timesteps, complexity=complexity, stages=stages, notes=notes, scale=scale,
                   runtime=backend.runtime)
    return sr, info


def upscale_image(img: LoadedImage, backend: Backend, settings: RunSettings,
                  progress: Optional[ProgressFn] = None) -> tuple[LoadedImage, RunInfo]:
    """Upscale a decoded image; alpha is resized separately (bicubic) and re-attached."""
    sr, info = run_pipeline(to_tensor(img.rgb), backend, settings, progress)
    info.notes = img.notes + info.notes
    return img.with_pixels(to_array(sr), resize_alpha(img.alpha, tuple(sr.shape[-2:]))), info
