"""The settings of one run, apart from the loaded models (the diffusers pattern).

A backend owns models only; every call gets a :class:`RunSettings`, an immutable value made from a
validated config for one backend. The same object drives the tensor pipeline, the batch layer and
its resume records, so what is recorded is exactly what ran.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from utils.config import TILE_SIZE_KEY, TILED_SECTIONS, resolve_timesteps, validate_config

# Settings that change nothing in the output file: resuming must not redo work because of them.
NOT_IN_OUTPUT = ("batch_size", "max_input_pixels", "max_output_pixels", "max_memory_mb")
# Settings only the diffusion backend reads.
INVSR_ONLY = ("timesteps", "seed", "cfg_scale", "adaptive_scheduler", "adaptive_guidance")


@dataclass(frozen=True)
class RunSettings:
    """Everything one run needs besides the models. Sizes are in input pixels."""

    backend: str
    timesteps: tuple[int, ...]     # InvSR, descending
    seed: int                      # InvSR
    cfg_scale: float               # InvSR classifier-free guidance (≤ 1: none)
    tile_size: int                 # InvSR patch size / largest tile of the convolutional backends
    tile_margin: Optional[int]     # convolutional backends: context pixels per tile side (None: the model's)
    batch_size: int                # patches per model call
    color_fix: str
    smart_chopping: bool
    min_overlap: float             # smart chopping, fraction of a patch
    max_overlap: float
    adaptive_scheduler: bool
    adaptive_guidance: bool
    attention_fusion: bool
    fusion_method: str
    edge_enhancement: float        # strength in [0, 1]; 0 = off
    outscale: float
    output_format: str
    quality: int
    max_input_pixels: int
    max_output_pixels: int         # at the native scale
    max_memory_mb: int

    @classmethod
    def from_config(cls, cfg: DictConfig, backend: str) -> "RunSettings":
        """Validate ``cfg`` for ``backend`` (ConfigError naming every problem) and take its values."""
        validate_config(cfg, backend)
        pp = cfg.postprocess
        tiled = cfg[backend] if backend in TILED_SECTIONS else None
        return cls(
            backend=backend,
            timesteps=tuple(resolve_timesteps(cfg)),
            seed=int(cfg.seed),
            cfg_scale=float(cfg.cfg_scale),
            tile_size=int(OmegaConf.select(cfg, TILE_SIZE_KEY[backend])) if backend in TILE_SIZE_KEY else 0,
            tile_margin=None if tiled is None or tiled.tile_margin is None else int(tiled.tile_margin),
            batch_size=int(cfg.basesr.chopping.extra_bs),
            color_fix=str(cfg.color_fix or "none"),
            smart_chopping=bool(pp.smart_chopping),
            min_overlap=float(pp.min_overlap),
            max_overlap=float(pp.max_overlap),
            adaptive_scheduler=bool(pp.adaptive_scheduler),
            adaptive_guidance=bool(pp.adaptive_guidance),
            attention_fusion=bool(pp.attention_fusion),
            fusion_method=str(pp.fusion_method),
            edge_enhancement=float(pp.edge_enhancement),
            outscale=float(cfg.outscale),
            output_format=str(cfg.output.format),
            quality=int(cfg.output.quality),
            max_input_pixels=int(cfg.limits.max_input_pixels),
            max_output_pixels=int(cfg.limits.max_output_pixels),
            max_memory_mb=int(cfg.limits.max_memory_mb),
        )

    def replace(self, **changes: Any) -> "RunSettings":
        return dataclasses.replace(self, **changes)

    def record(self) -> dict[str, Any]:
        """The settings that change the output file, for resume records (JSON-ready)."""
        skip = NOT_IN_OUTPUT + (() if self.backend == "invsr" else INVSR_ONLY)
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in skip}
        if "timesteps" in out:
            out["timesteps"] = list(out["timesteps"])
        if not self.smart_chopping:
            out.pop("min_overlap"), out.pop("max_overlap")
        if not self.attention_fusion:
            out.pop("fusion_method")
        if self.output_format == "png":
            out.pop("quality")
        return out

