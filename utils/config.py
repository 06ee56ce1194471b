"""Load the one OmegaConf config and derive per-run variants without touching the shared object."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "sample-sd-turbo.yaml"
WEIGHTS_DIR = PROJECT_ROOT / "weights"

# Default timestep lists of the reference InvSR, by number of steps.
DEFAULT_TIMESTEPS = {
    1: [200],
    2: [200, 100],
    3: [200, 100, 50],
    4: [200, 150, 100, 50],
    5: [250, 200, 150, 100, 50],
}


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
