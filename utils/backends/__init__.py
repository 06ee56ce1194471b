"""The backend registry: which upscalers exist, which can run here, and the loaded instances.

Instances hold models only and are cached by model identity (:meth:`Backend.model_key`: weights,
device, dtype), never by run settings, so changing a setting never reloads or duplicates a model.
"""
from __future__ import annotations

import threading

from omegaconf import DictConfig

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.backends.bicubic import BicubicBackend
from utils.backends.custom import CustomBackend
from utils.backends.fast_models import AnimeBackend, SpanBackend, Waifu2xBackend
from utils.backends.invsr.backend import InvSRBackend
from utils.backends.realesrgan import RealESRGANBackend

BACKENDS: dict[str, type[Backend]] = {
    "invsr": InvSRBackend,
    "realesrgan": RealESRGANBackend,
    "span": SpanBackend,
    "realesrgan-anime": AnimeBackend,
    "waifu2x": Waifu2xBackend,
    "bicubic": BicubicBackend,
    "custom": CustomBackend,  # a user's model file (custom.model_path); never chosen by "auto"
}
BACKEND_CHOICES = ("auto", *BACKENDS)
OFFLINE_DEFAULT = "realesrgan"
# Loaded backends kept at once; SD-Turbo alone is ~2.5 GB in float32.
MAX_LOADED = 4

__all__ = ["Availability", "Backend", "BackendUnavailable", "BACKENDS", "BACKEND_CHOICES", "OFFLINE_DEFAULT",
           "backend_status", "resolve_backend_name", "load_backend"]

_loaded: dict[tuple, Backend] = {}
_lock = threading.Lock()


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
        raise BackendUnavailable(f"unknown backend '{name}'; choose one of {', '.join(BACKEND_CHOICES)}")
    status = BACKENDS[name].availability(cfg)
    if not status.ok:
        raise BackendUnavailable(status.reason)
    return name, f"using {name}"


def load_backend(name: str, cfg: DictConfig) -> Backend:
    """The loaded backend ``name`` for ``cfg``'s model keys; loaded once per model identity."""
    if name not in BACKENDS:
        raise BackendUnavailable(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    cls = BACKENDS[name]
    key = (name, cls.model_key(cfg))
    with _lock:  # two requests for a model not loaded yet must not load it twice
        if key not in _loaded:
            if len(_loaded) >= MAX_LOADED:
                _loaded.pop(next(iter(_loaded)))
            _loaded[key] = cls(cfg)
        return _loaded[key]
