"""The backend registry: which upscalers exist, which can run here, and which one to use."""
from __future__ import annotations

from functools import lru_cache

from omegaconf import DictConfig, OmegaConf

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.backends.bicubic import BicubicBackend
from utils.backends.invsr import InvSRBackend
from utils.backends.realesrgan import RealESRGANBackend

BACKENDS: dict[str, type[Backend]] = {
    "invsr": InvSRBackend,
    "realesrgan": RealESRGANBackend,
    "bicubic": BicubicBackend,
}

OFFLINE_DEFAULT = "realesrgan"

__all__ = ["Availability", "Backend", "BackendUnavailable", "BACKENDS", "backend_status",
           "resolve_backend_name", "create_backend"]


def backend_status(cfg: DictConfig) -> dict[str, Availability]:
    """Availability of every registered backend (cheap: no model is loaded)."""
    return {name: cls.availability(cfg) for name, cls in BACKENDS.items()}


def resolve_backend_name(cfg: DictConfig, requested: str | None = None) -> tuple[str, str]:
    """(backend name, notice for the user). ``auto`` means InvSR when its weights resolve, else the
    offline default; an explicitly requested backend that cannot run raises BackendUnavailable."""
    name = requested or cfg.get("backend", "auto") or "auto"
    if name == "auto":
        invsr = InvSRBackend.availability(cfg)
        if invsr.ok:
            return "invsr", "using InvSR"
        return OFFLINE_DEFAULT, f"InvSR weights not available, using the offline default Real-ESRGAN x4plus ({invsr.reason})"
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    status = BACKENDS[name].availability(cfg)
    if not status.ok:
        raise BackendUnavailable(status.reason)
    return name, f"using {name}"


def create_backend(name: str, cfg: DictConfig) -> Backend:
    """A ready backend; instances are cached per (name, config) so the app does not reload models."""
    if name not in BACKENDS:
        raise BackendUnavailable(backend_status(cfg).get(name, Availability(False, f"unknown backend '{name}'")).reason)
    return _cached_backend(name, OmegaConf.to_yaml(cfg))


@lru_cache(maxsize=4)
def _cached_backend(name: str, cfg_yaml: str) -> Backend:
    cfg = OmegaConf.create(cfg_yaml)
    OmegaConf.set_readonly(cfg, True)
    return BACKENDS[name](cfg)
