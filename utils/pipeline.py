"""The one place that turns an input image into the final result, for the CLI, the app and the API.

Order (the seed project's): complexity → adaptive scheduler / guidance (InvSR) → backend with
(smart) chopping → color fix → attention fusion → edge enhancement → output scale, each stage
switched by the config's ``postprocess`` section.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from datapipe.image_io import ImageError, LoadedImage, read_image, remove_stale_parts, write_image
from utils.adaptive_scheduler import adaptive_timesteps
from utils.backends import Backend, create_backend
from utils.chopping import ProgressFn
from utils.color_fix import METHODS as COLOR_FIX_METHODS
from utils.color_fix import color_fix
from utils.complexity import image_complexity
from utils.config import with_overrides
from utils.enhancement import enhance_edges
from utils.fusion import fuse
from utils.guidance import adaptive_guidance

# Stages that only some backends can use; the others are refused, never silently ignored.
STAGE_BACKENDS = {
    "adaptive_scheduler": ("invsr",),
    "adaptive_guidance": ("invsr",),
    # Fusion blends the model's detail with the bicubic fallback: for bicubic itself it is a no-op.
    "attention_fusion": ("invsr", "realesrgan"),
}
FUSION_METHODS = ("weighted", "max")


class Cancelled(Exception):
    """Raised from a progress callback to stop between patches; nothing is written."""


class LimitError(ValueError):
    """The requested output would exceed the configured pixel limit."""


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """H×W×3 float32 [0,1] -> 1×3×H×W."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float()


def to_array(x: torch.Tensor) -> np.ndarray:
    """1×3×H×W -> H×W×3 float32 [0,1]."""
    return x[0].permute(1, 2, 0).float().cpu().numpy()


def output_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    return max(1, round(h * outscale)), max(1, round(w * outscale))


def check_limits(h: int, w: int, cfg: DictConfig) -> None:
    oh, ow = output_size(h, w, cfg.outscale)
    if oh * ow > cfg.limits.max_output_pixels:
        raise LimitError(
            f"the result would be {ow}×{oh} = {oh * ow:,} pixels, over the limit of "
            f"{cfg.limits.max_output_pixels:,} (limits.max_output_pixels); lower outscale or crop the input"
        )


def bicubic_reference(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic upsampling of the input: the colour reference and the 'before' image."""
    return F.interpolate(lr, size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


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

    def summary(self) -> str:
        parts = [f"{self.backend} on {self.device}",
                 f"{self.input_size[0]}×{self.input_size[1]} → {self.output_size[0]}×{self.output_size[1]}",
                 f"color fix {self.color_fix}", f"{self.seconds:.2f} s"]
        if self.timesteps:
            parts.insert(1, f"timesteps {self.timesteps}")
        if self.complexity is not None:
            parts.insert(1, f"complexity {self.complexity:.2f}")
        return " · ".join(parts + self.stages + self.notes)


def check_stages(cfg: DictConfig, backend_name: str) -> None:
    """Raise ValueError naming every post-processing setting that is invalid or does not apply."""
    pp = cfg.postprocess
    problems = [f"{stage.replace('_', ' ')} applies only to {' and '.join(names)}, not {backend_name}"
                for stage, names in STAGE_BACKENDS.items() if pp[stage] and backend_name not in names]
    if (cfg.color_fix or "none") not in COLOR_FIX_METHODS:
        problems.append(f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)} (got {cfg.color_fix!r})")
    if pp.fusion_method not in FUSION_METHODS:
        problems.append(f"fusion_method must be weighted or max (got {pp.fusion_method!r})")
    if not 0 <= pp.edge_enhancement <= 1:
        problems.append(f"edge enhancement strength must be in [0, 1] (got {pp.edge_enhancement})")
    if not 0 <= pp.min_overlap < pp.max_overlap < 1:
        problems.append(f"overlaps must satisfy 0 ≤ min_overlap < max_overlap < 1 "
                        f"(got {pp.min_overlap}, {pp.max_overlap})")
    if problems:
        raise ValueError("; ".join(problems))


def adapt_config(cfg: DictConfig, complexity: float) -> tuple[DictConfig, list[str], list[str]]:
    """InvSR's config with the adaptive scheduler / guidance applied for this image, plus the stages
    that ran and warnings."""
    from sampler_invsr import resolve_timesteps

    pp, overrides, stages, notes = cfg.postprocess, {}, [], []
    if pp.adaptive_scheduler:
        overrides["timesteps"] = adaptive_timesteps(complexity, resolve_timesteps(cfg))
        stages.append("adaptive scheduler")
    if pp.adaptive_guidance:
        if cfg.cfg_scale > 1:
            overrides["cfg_scale"] = adaptive_guidance(cfg.cfg_scale, complexity)
            stages.append(f"guidance {overrides['cfg_scale']:.2f}")
        else:
            notes.append("adaptive guidance idle: cfg_scale ≤ 1 means no guidance to adapt")
    return (with_overrides(cfg, overrides) if overrides else cfg), stages, notes


def run_pipeline(lr: torch.Tensor, cfg: DictConfig, backend: Backend,
                 progress: Optional[ProgressFn] = None) -> tuple[torch.Tensor, RunInfo]:
    """1×3×h×w float32 [0,1] -> (1×3×H×W float32 [0,1], RunInfo) with H×W = outscale·(h×w)."""
    if lr.ndim != 4 or lr.shape[0] != 1 or lr.shape[1] != 3:
        raise ValueError(f"expected a 1×3×h×w RGB tensor, got shape {tuple(lr.shape)}")
    h, w = lr.shape[-2:]
    check_limits(h, w, cfg)
    check_stages(cfg, backend.name)
    start = time.perf_counter()
    complexity = float(image_complexity(lr).mean())
    timesteps, notes, stages = None, [], []
    if backend.name == "invsr":
        from sampler_invsr import resolve_timesteps

        run_cfg, stages, notes = adapt_config(cfg, complexity)
        if run_cfg is not cfg:
            backend = create_backend(backend.name, run_cfg)  # cached; the models are shared
        timesteps = resolve_timesteps(run_cfg)
    sr = backend.upscale(lr, progress)
    pp, method = cfg.postprocess, cfg.color_fix or "none"
    if method != "none" or pp.attention_fusion:
        reference = bicubic_reference(lr, tuple(sr.shape[-2:]))
        if method != "none":
            sr = color_fix(sr, reference, method)
        if pp.attention_fusion:
            sr = fuse([sr, reference], pp.fusion_method)
            stages.append(f"fusion {pp.fusion_method}")
    if pp.edge_enhancement > 0:
        sr = enhance_edges(sr, float(pp.edge_enhancement))
        stages.append(f"edges {pp.edge_enhancement:.2f}")
    if pp.smart_chopping:
        stages.append("smart chopping")
    oh, ow = output_size(h, w, cfg.outscale)
    sr = resize_to(sr, (oh, ow))
    info = RunInfo(backend.name, backend.device, (w, h), (ow, oh), time.perf_counter() - start, method,
                   timesteps=timesteps, complexity=complexity, stages=stages, notes=notes)
    return sr, info


def upscale_image(img: LoadedImage, cfg: DictConfig, backend: Backend,
                  progress: Optional[ProgressFn] = None) -> tuple[LoadedImage, RunInfo]:
    """Upscale a decoded image; alpha is resized separately (bicubic) and re-attached."""
    sr, info = run_pipeline(to_tensor(img.rgb), cfg, backend, progress)
    info.notes = img.notes + info.notes
    return img.with_pixels(to_array(sr), resize_alpha(img.alpha, tuple(sr.shape[-2:]))), info


def process_file(src: Path, dst: Path, cfg: DictConfig, backend: Backend,
                 progress: Optional[ProgressFn] = None) -> RunInfo:
    """Read ``src``, upscale, write ``dst`` atomically. Refuses to write over the input."""
    if dst.exists() and dst.resolve() == src.resolve():
        raise ImageError(src, "the output path is the input file; choose another output folder")
    img = read_image(src, max_pixels=cfg.limits.max_input_pixels)
    result, info = upscale_image(img, cfg, backend, progress)
    write_image(dst, result, quality=cfg.output.quality)
    return info


def output_name(src: Path, fmt: str) -> str:
    return f"{src.stem}.{fmt.lower().replace('jpeg', 'jpg')}"


def plan_outputs(sources: Iterable[Path], out_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """(source, output) pairs; sources sharing a stem (a.png, a.jpg) keep their extension in the name."""
    sources = list(sources)
    stems = [s.stem for s in sources]
    pairs = []
    for src in sources:
        name = output_name(src, fmt)
        if stems.count(src.stem) > 1:
            name = f"{src.stem}_{src.suffix.lstrip('.').lower()}.{name.rsplit('.', 1)[1]}"
        pairs.append((src, out_dir / name))
    return pairs


def describe_error(src: Path, exc: Exception) -> str:
    """One line naming the file and the reason, without a traceback."""
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, ValueError):
        return f"{src.name}: {exc}"
    if isinstance(exc, MemoryError):
        return f"{src.name}: out of memory; lower the chopping size or the input size"
    return f"{src.name}: {type(exc).__name__}: {exc}"


@dataclass
class BatchItem:
    source: Path
    output: Optional[Path]
    status: str           # ok | skipped | error
    reason: str = ""
    seconds: float = 0.0


def process_batch(pairs: list[tuple[Path, Path]], cfg: DictConfig, backend: Backend, overwrite: bool = False,
                  patch_progress: Optional[Callable[[Path], Optional[ProgressFn]]] = None,
                  on_item: Optional[Callable[[BatchItem], None]] = None) -> list[BatchItem]:
    """Process every pair, skipping finished outputs (resume) unless ``overwrite``; one bad file does
    not stop the rest. Cancellation (``Cancelled`` from a progress callback) propagates."""
    sources = {p.resolve() for p, _ in pairs}
    for folder in {dst.parent for _, dst in pairs}:
        if folder.is_dir():
            remove_stale_parts(folder)
    items = []
    for src, dst in pairs:
        if dst.resolve() in sources:
            item = BatchItem(src, None, "error", "the output would overwrite an input file")
        elif dst.exists() and not overwrite:
            item = BatchItem(src, dst, "skipped", "output exists (use overwrite to redo)")
        else:
            try:
                info = process_file(src, dst, cfg, backend, patch_progress(src) if patch_progress else None)
                item = BatchItem(src, dst, "ok", "; ".join(info.notes), info.seconds)
            except Cancelled:
                raise
            except Exception as exc:  # one bad file must not stop the batch; the reason is reported
                item = BatchItem(src, None, "error", describe_error(src, exc))
        items.append(item)
        if on_item is not None:
            on_item(item)
    return items
