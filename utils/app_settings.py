"""The studio's settings: one definition shared by the Single and Batch tabs and the API, and their
translation into config overrides (the same keys the CLI sets)."""
from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from inference_invsr import COLOR_FIXES, PATCH_SIZE_KEY
from utils.config import DEFAULT_TIMESTEPS, parse_timesteps, with_overrides
from utils.pipeline import FUSION_METHODS

CHOPPING_SIZES = (128, 256)
FORMATS = ("png", "webp", "jpeg")
MIN_OVERLAP_RANGE = (0.15, 0.40)
MAX_OVERLAP_RANGE = (0.40, 0.60)
OUTSCALE_RANGE = (1.0, 4.0)
# Settings that only mean something to the diffusion backend.
INVSR_ONLY = ("num_steps", "timesteps", "adaptive_scheduler", "adaptive_guidance", "seed")


@dataclass(frozen=True)
class Settings:
    """Every user-facing knob; field names are the API's parameter names (CLI spelling where it has one)."""

    backend: str
    num_steps: int
    timesteps: str            # "" = the default list for num_steps, else e.g. "200,100,50"
    chopping_size: int
    color_fix: str
    adaptive_scheduler: bool
    smart_chopping: bool
    min_overlap: float
    max_overlap: float
    attention_fusion: bool
    fusion_method: str
    edge_enhancement: bool
    edge_strength: float
    adaptive_guidance: bool
    seed: int
    outscale: float
    format: str
    quality: int

    @classmethod
    def defaults(cls, cfg: DictConfig, backend: str) -> "Settings":
        """The config's values, so the UI starts where the CLI would."""
        pp = cfg.postprocess
        chopping = int(OmegaConf.select(cfg, PATCH_SIZE_KEY[backend]))
        return cls(
            backend=backend,
            num_steps=int(cfg.num_steps),
            timesteps=",".join(str(t) for t in cfg.timesteps) if cfg.timesteps else "",
            chopping_size=chopping if chopping in CHOPPING_SIZES else CHOPPING_SIZES[-1],
            color_fix=str(cfg.color_fix or "none"),
            adaptive_scheduler=bool(pp.adaptive_scheduler),
            smart_chopping=bool(pp.smart_chopping),
            min_overlap=float(pp.min_overlap),
            max_overlap=float(pp.max_overlap),
            attention_fusion=bool(pp.attention_fusion),
            fusion_method=str(pp.fusion_method),
            edge_enhancement=float(pp.edge_enhancement) > 0,
            edge_strength=float(pp.edge_enhancement) or 0.5,
            adaptive_guidance=bool(pp.adaptive_guidance),
            seed=int(cfg.seed),
            outscale=float(cfg.outscale),
            format=str(cfg.output.format),
            quality=int(cfg.output.quality),
        )


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")


def validate(s: Settings) -> None:
    """Raise ValueError naming the first setting out of range (API callers bypass the UI's limits)."""
    _check_choice("num_steps", s.num_steps, tuple(DEFAULT_TIMESTEPS))
    _check_choice("chopping_size", s.chopping_size, CHOPPING_SIZES)
    _check_choice("color_fix", s.color_fix, COLOR_FIXES)
    _check_choice("fusion_method", s.fusion_method, FUSION_METHODS)
    _check_choice("format", s.format, FORMATS)
    _check_range("min_overlap", s.min_overlap, *MIN_OVERLAP_RANGE)
    _check_range("max_overlap", s.max_overlap, *MAX_OVERLAP_RANGE)
    _check_range("edge_strength", s.edge_strength, 0.0, 1.0)
    _check_range("outscale", s.outscale, *OUTSCALE_RANGE)
    _check_range("quality", s.quality, 1, 100)


def config_for(cfg: DictConfig, s: Settings, backend: str) -> DictConfig:
    """``cfg`` with the settings applied for ``backend`` (the resolved name, e.g. after "auto")."""
    validate(s)
    timesteps = parse_timesteps(s.timesteps)
    return with_overrides(cfg, {
        "backend": backend,
        "num_steps": len(timesteps) if timesteps else int(s.num_steps),
        "timesteps": timesteps,
        PATCH_SIZE_KEY[backend]: int(s.chopping_size),
        "color_fix": s.color_fix,
        "postprocess.adaptive_scheduler": bool(s.adaptive_scheduler),
        "postprocess.smart_chopping": bool(s.smart_chopping),
        "postprocess.min_overlap": float(s.min_overlap),
        "postprocess.max_overlap": float(s.max_overlap),
        "postprocess.attention_fusion": bool(s.attention_fusion),
        "postprocess.fusion_method": s.fusion_method,
        "postprocess.edge_enhancement": float(s.edge_strength) if s.edge_enhancement else 0.0,
        "postprocess.adaptive_guidance": bool(s.adaptive_guidance),
        "seed": int(s.seed),
        "outscale": float(s.outscale),
        "output.format": s.format,
        "output.quality": int(s.quality),
    })


def scale_label(outscale: float) -> str:
    """4.0 -> "x4", 2.5 -> "x2.5" (used in output folder names)."""
    return f"x{outscale:g}"
