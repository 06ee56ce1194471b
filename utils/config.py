"""Load the one OmegaConf config and derive per-run variants without touching the shared object."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "sample-sd-turbo.yaml"
WEIGHTS_DIR = PROJECT_ROOT / "weights"

MAX_TIMESTEP = 999  # SD-Turbo's scheduler has 1000 training timesteps
# Default timestep lists of the reference InvSR, by number of steps.
DEFAULT_TIMESTEPS = {
    1: [200],
    2: [200, 100],
    3: [200, 100, 50],
    4: [200, 150, 100, 50],
    5: [250, 200, 150, 100, 50],
}


def parse_timesteps(text: str) -> list[int] | None:
    """"200, 100,50" -> [200, 100, 50]; "" -> None. 1-5 strictly descending integers in 1..999."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        steps = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ValueError(f"timesteps must be comma-separated integers (e.g. 200,100,50), got '{text}'") from None
    if not 1 <= len(steps) <= max(DEFAULT_TIMESTEPS):
        raise ValueError(f"give 1 to {max(DEFAULT_TIMESTEPS)} timesteps, got {len(steps)}")
    if any(not 1 <= t <= MAX_TIMESTEP for t in steps) or any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"timesteps must be strictly descending values in 1..{MAX_TIMESTEP}, got {steps}")
    return steps


def load_config(path: Optional[str | Path] = None) -> DictConfig:
    """Read a YAML config (default: configs/sample-sd-turbo.yaml) as a read-only OmegaConf object."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = OmegaConf.load(path)
    OmegaConf.set_readonly(cfg, True)
    return cfg


def with_overrides(cfg: DictConfig, overrides: Mapping[str, Any]) -> DictConfig:
    """A read-only copy of ``cfg`` with dotted-key overrides applied; ``None`` values are skipped.

    Keys must already exist in the config, so a typo fails loudly instead of being ignored.
    """
    new = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    for key, value in overrides.items():
        if value is None:
            continue
        if OmegaConf.select(new, key, default=_MISSING) is _MISSING:
            raise KeyError(f"unknown config key: {key}")
        OmegaConf.update(new, key, value, merge=False)
    OmegaConf.set_readonly(new, True)
    return new


_MISSING = object()
