"""The studio's settings: one definition shared by the Single and Batch tabs and the API, and their
translation into config overrides (the same keys the CLI sets). Which of them each backend reads (the
page disables the others, the API and the CLI refuse them) comes from the backends' specs
(:mod:`utils.settings`). Values are checked once, when the run's settings are made."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf

from utils.config import parse_timesteps, with_overrides
from utils.settings import BACKEND_SPECIFIC, SPECS, config_key

MIN_OVERLAP_RANGE = (0.15, 0.40)
MAX_OVERLAP_RANGE = (0.40, 0.60)
TILE_SIZE_RANGE = (16, 1024)      # the page's slider, input pixels, from the config's least size
OVERLAP_RANGE = (0, 64)           # context pixels per tile side
OUTSCALES = (1, 2, 3, 4)          # the page's choices; a factor typed in, or sent by the API, may be any from 1 to 4

@dataclass(frozen=True)
class Settings:
    """Every user-facing knob; field names are the API's parameter names (the CLI's flag names).
    ``None`` (or "" for timesteps) means the config's value for the chosen backend."""

    backend: str
    tile_size: Optional[int]       # input pixels
    overlap: Optional[int]         # tiled backends: context pixels each tile reads past its edge
    smart_chopping: bool
    min_overlap: float             # smart chopping, fraction of a tile
    max_overlap: float
    num_steps: Optional[int]       # InvSR
    timesteps: str                 # InvSR: "" = the default list for num_steps, else e.g. "200,100,50"
    seed: Optional[int]            # InvSR
    adaptive_scheduler: bool       # InvSR
    adaptive_guidance: bool        # InvSR
    denoise: Optional[int]         # waifu2x: -1 (off) to 3
    color_fix: str
    attention_fusion: bool
    fusion_method: Optional[str]
    edge_enhancement: bool
    edge_strength: float
    outscale: float
    format: str
    quality: int
    niqe: bool                     # also score the result and its bicubic upscale with NIQE (no reference)

    @classmethod
    def defaults(cls, cfg: DictConfig, backend: str) -> "Settings":
        """The config's values for ``backend``, every one concrete, so the page starts where the CLI would."""
        pp = cfg.postprocess
        return cls(
            backend=backend,
            **tiling_defaults(cfg, backend),
            smart_chopping=bool(pp.smart_chopping),
            min_overlap=float(pp.min_overlap),
            max_overlap=float(pp.max_overlap),
            num_steps=int(cfg.num_steps),
            timesteps=",".join(str(t) for t in cfg.timesteps) if cfg.timesteps else "",
            seed=int(cfg.seed),
            adaptive_scheduler=bool(pp.adaptive_scheduler),
            adaptive_guidance=bool(pp.adaptive_guidance),
            denoise=int(cfg.waifu2x.denoise),
            color_fix=str(cfg.color_fix or "none"),
            attention_fusion=bool(pp.attention_fusion),
            fusion_method=str(pp.fusion_method),
            edge_enhancement=float(pp.edge_enhancement) > 0,
            edge_strength=float(pp.edge_enhancement) or 0.5,
            outscale=float(cfg.outscale),
            format=str(cfg.output.format),
            quality=int(cfg.output.quality),
            niqe=True,  # ~0.1 s per megapixel of result: a few % of the fast models' time, < 1 % of x4plus's
        )

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def applicable(self) -> "Settings":
        """These settings with those the backend does not read unset (off, "" or None): the page sends
        every control's value, including the disabled ones."""
        reads = SPECS[self.backend].reads
        return self.replace(**{f.name: _unset(f) for f in dataclasses.fields(self)
                               if f.name in BACKEND_SPECIFIC and f.name not in reads})


def _unset(f: dataclasses.Field):
    return False if f.type == "bool" else "" if f.name == "timesteps" else None


def tiling_defaults(cfg: DictConfig, backend: str) -> dict[str, Optional[int]]:
    """The backend's tile size and overlap: the config's, else the spec's (no overlap for InvSR, whose
    patches overlap by half)."""
    spec = SPECS[backend]
    tile = OmegaConf.select(cfg, spec.tile_key)
    margin = None if spec.margin_key is None else OmegaConf.select(cfg, spec.margin_key)
    return {"tile_size": spec.tile_size if tile is None else int(tile),
            "overlap": spec.context_margin if margin is None else int(margin)}


def config_for(cfg: DictConfig, s: Settings, backend: str) -> DictConfig:
    """``cfg`` with the settings applied for ``backend`` (the resolved name, e.g. after "auto"). Every
    value the user set wins over the YAML (custom timesteps, else the default list for the steps)."""
    overrides = {
        "backend": backend,
        "color_fix": s.color_fix,
        "postprocess.adaptive_scheduler": bool(s.adaptive_scheduler),
        "postprocess.smart_chopping": bool(s.smart_chopping),
        "postprocess.min_overlap": s.min_overlap,
        "postprocess.max_overlap": s.max_overlap,
        "postprocess.attention_fusion": bool(s.attention_fusion),
        "postprocess.edge_enhancement": s.edge_strength if s.edge_enhancement else 0.0,
        "postprocess.adaptive_guidance": bool(s.adaptive_guidance),
        "outscale": _number(s.outscale),
        "output.format": s.format,
        "output.quality": _whole(s.quality),
    }
    spec = SPECS[backend]
    # The default tile size left as it is keeps the backend's rule for large inputs (InvSR's 256).
    tile = None if s.tile_size == spec.tile_size and OmegaConf.select(cfg, spec.tile_key) is None else s.tile_size
    optional = {setting: value for setting, value in (("num_steps", s.num_steps), ("seed", s.seed),
                                                      ("tile_size", tile), ("overlap", s.overlap),
                                                      ("denoise", s.denoise), ("fusion_method", s.fusion_method))
                if setting in spec.reads}
    overrides.update({config_key(setting, backend): _whole(value) for setting, value in optional.items()
                      if value is not None})
    if s.timesteps or s.num_steps is not None:  # either replaces the YAML's timesteps
        overrides["timesteps"] = parse_timesteps(s.timesteps)
    return with_overrides(cfg, overrides)


def _number(value):
    """The scale box also takes a typed value, which arrives as text; what is not a number is left for
    validation to refuse."""
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def _whole(value):
    """Web controls send 95.0 for 95; a fractional value is left for validation to refuse."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def scale_label(outscale: float) -> str:
    """4.0 -> "x4", 2.5 -> "x2.5" (used in output folder and file names)."""
    return f"x{outscale:g}"
