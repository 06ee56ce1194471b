"""The one OmegaConf config: loading it, deriving per-run copies, and the one validation of its values.

The CLI, the app and the Python API all start from ``configs/*.yaml``, apply the user's choices with
:func:`with_overrides` (never mutating the shared object) and check the result with
:func:`validate_config` (and, for a backend, :func:`utils.settings.config_problems`) before any work is done.
"""
from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "sample-sd-turbo.yaml"
WEIGHTS_DIR = PROJECT_ROOT / "weights"

SCALE = 4                   # InvSR's native scale, and the packaged models' largest
MAX_TIMESTEP = 999          # SD-Turbo's scheduler has 1000 training timesteps
# Default timestep lists of the reference InvSR, by number of steps.
DEFAULT_TIMESTEPS = {
    1: [200],
    2: [200, 100],
    3: [200, 100, 50],
    4: [200, 150, 100, 50],
    5: [250, 200, 150, 100, 50],
}
MAX_STEPS = max(DEFAULT_TIMESTEPS)
COLOR_FIX_METHODS = ("none", "ycbcr", "wavelet", "histogram", "hybrid")
FUSION_METHODS = ("weighted", "max")
OUTPUT_FORMATS = ("png", "webp", "jpeg")
OUTSCALE_RANGE = (1.0, 4.0)   # a user's ×8 model (the custom backend) may go up to its scale
# The engine that runs a model and its precision (utils.runtimes.policy decides what auto means).
RUNTIMES = ("auto", "openvino", "torch", "ncnn")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")
# Keys of older configs and the settings that replaced them; a config that still has one is refused.
REPLACED_KEYS = {"realesrgan.engine": "runtime", "realesrgan.dtype": "precision",
                 "sd_pipe.params.torch_dtype": "precision"}
WAIFU2X_DENOISE_LEVELS = (-1, 0, 1, 2, 3)  # -1: no denoising


class ConfigError(ValueError):
    """One or more config values are invalid; the message names each key and what it must be."""


def parse_timesteps(text: str) -> list[int] | None:
    """"200, 100,50" -> [200, 100, 50]; "" -> None. Values are checked by :func:`check_timesteps`."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        steps = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"timesteps must be comma-separated integers (e.g. 200,100,50), got '{text}'") from None
    check_timesteps(steps)
    return steps


def check_timesteps(steps: list) -> list[int]:
    """1-5 strictly descending integers in 1..999, else ConfigError."""
    if any(isinstance(t, bool) or not isinstance(t, Integral) for t in steps):
        raise ConfigError(f"timesteps must be integers (got {steps})")
    if not 1 <= len(steps) <= MAX_STEPS:
        raise ConfigError(f"give 1 to {MAX_STEPS} timesteps, got {len(steps)}")
    if any(not 1 <= t <= MAX_TIMESTEP for t in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ConfigError(f"timesteps must be strictly descending values in 1..{MAX_TIMESTEP}, got {list(steps)}")
    return [int(t) for t in steps]


def resolve_timesteps(cfg: DictConfig) -> list[int]:
    """The descending timesteps to run: ``timesteps`` when set, else the default list for ``num_steps``."""
    if cfg.get("timesteps") is None:
        steps = cfg.get("num_steps", 1)
        if isinstance(steps, bool) or not isinstance(steps, Integral) or steps not in DEFAULT_TIMESTEPS:
            raise ConfigError(f"num_steps must be an integer from 1 to {MAX_STEPS} (got {steps!r})")
        return list(DEFAULT_TIMESTEPS[int(steps)])
    raw = cfg.timesteps
    return check_timesteps(list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw])


def load_config(path: Optional[str | Path] = None) -> DictConfig:
    """Read a YAML config (default: configs/sample-sd-turbo.yaml) as a read-only OmegaConf object."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = OmegaConf.load(path)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def with_overrides(cfg: DictConfig, overrides: Mapping[str, Any]) -> DictConfig:
    """A read-only copy of ``cfg`` with dotted-key overrides applied; ``None`` sets the key to null.

    Callers pass only what the user actually chose. Keys must already exist in the config, so a typo
    fails loudly instead of being ignored.
    """
    new = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in overrides.items():
        if OmegaConf.select(new, key, default=_MISSING) is _MISSING:
            raise KeyError(f"unknown config key: {key}")
        OmegaConf.update(new, key, value, merge=False)
    OmegaConf.set_readonly(new, True)
    return new


_MISSING = object()


def _is_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def general_problems(cfg: DictConfig, max_outscale: float = OUTSCALE_RANGE[1]) -> list[str]:
    """Every invalid value in ``cfg`` that does not depend on the backend, one message each (what does:
    :func:`utils.settings.config_problems`); ``max_outscale``: the backend's, when above 4 (a ×8 model)."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    try:
        resolve_timesteps(cfg)
    except ConfigError as exc:
        problems.append(str(exc))
    need(_is_int(cfg.seed), f"seed must be an integer (got {cfg.seed!r})")
    need(_is_number(cfg.cfg_scale) and cfg.cfg_scale >= 0, f"cfg_scale must be a number ≥ 0 (got {cfg.cfg_scale!r})")
    need(cfg.basesr.sf == SCALE, f"basesr.sf must be {SCALE}: InvSR upscales by exactly ×{SCALE}")
    bs = cfg.basesr.chopping.extra_bs
    need(_is_int(bs) and bs >= 1, f"basesr.chopping.extra_bs must be an integer ≥ 1 (got {bs!r})")
    for key in ("latent_tiled_size", "sample_tiled_size"):
        need(_is_int(cfg[key]) and cfg[key] > 0, f"{key} must be a positive integer (got {cfg[key]!r})")
    problems += [f"{old} was replaced by the top-level {new}: remove it from the config and set {new} instead"
                 for old, new in REPLACED_KEYS.items() if OmegaConf.select(cfg, old, default=_MISSING) is not _MISSING]
    runtime, precision = runtime_setting(cfg)
    need(runtime in RUNTIMES, f"runtime must be one of {', '.join(RUNTIMES)} (got {runtime!r})")
    need(precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    need(_is_int(cfg.waifu2x.denoise) and cfg.waifu2x.denoise in WAIFU2X_DENOISE_LEVELS,
         f"waifu2x.denoise must be -1 (off), 0, 1, 2 or 3 (got {cfg.waifu2x.denoise!r})")
    need((cfg.color_fix or "none") in COLOR_FIX_METHODS,
         f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)} (got {cfg.color_fix!r})")
    pp = cfg.postprocess
    need(pp.fusion_method in FUSION_METHODS,
         f"postprocess.fusion_method must be one of {', '.join(FUSION_METHODS)} (got {pp.fusion_method!r})")
    need(_is_number(pp.edge_enhancement) and 0 <= pp.edge_enhancement <= 1,
         f"postprocess.edge_enhancement (strength) must be in [0, 1] (got {pp.edge_enhancement!r})")
    need(_is_number(pp.min_overlap) and _is_number(pp.max_overlap) and 0 <= pp.min_overlap < pp.max_overlap < 1,
         f"smart chopping overlaps must satisfy 0 ≤ min_overlap < max_overlap < 1 "
         f"(got {pp.min_overlap!r}, {pp.max_overlap!r})")
    low, high = OUTSCALE_RANGE[0], max(OUTSCALE_RANGE[1], max_outscale)
    need(_is_number(cfg.outscale) and low <= cfg.outscale <= high,
         f"outscale must be between {low:g} and {high:g} (got {cfg.outscale!r})")
    for side in ("width", "height"):
        target = cfg.output[side]
        need(target is None or (_is_int(target) and target > 0),
             f"output.{side} must be null or a positive number of pixels (got {target!r})")
    need(cfg.output.width is None or cfg.output.height is None,
         "give a target width or a target height, not both (the other follows the aspect ratio)")
    need(cfg.output.format in OUTPUT_FORMATS,
         f"output.format must be one of {', '.join(OUTPUT_FORMATS)} (got {cfg.output.format!r})")
    need(_is_int(cfg.output.quality) and 1 <= cfg.output.quality <= 100,
         f"output.quality must be an integer from 1 to 100 (got {cfg.output.quality!r})")
    for key in ("max_input_pixels", "max_output_pixels", "max_memory_mb"):
        need(_is_int(cfg.limits[key]) and cfg.limits[key] > 0,
             f"limits.{key} must be a positive integer (got {cfg.limits[key]!r})")
    return problems


def runtime_setting(cfg: DictConfig) -> tuple[str, str]:
    """(runtime, precision) as the config sets them (``auto`` when a config predates them)."""
    return str(cfg.get("runtime") or "auto"), str(cfg.get("precision") or "auto")


def names_list(names) -> str:
    """("a",) -> "a"; ("a", "b", "c") -> "a, b and c"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming every problem :func:`general_problems` finds."""
    problems = general_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
