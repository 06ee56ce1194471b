"""The backend registry: which upscalers exist, which can run here, and the loaded instances.

Instances hold models only and are cached by model identity (:meth:`Backend.model_key`: weights,
device, dtype), never by run settings, so changing a setting never reloads or duplicates a model.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from omegaconf import DictConfig

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.backends.bicubic import BicubicBackend
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
}
BACKEND_CHOICES = ("auto", *BACKENDS)
OFFLINE_DEFAULT = "realesrgan"
# Loaded backends kept at once; SD-Turbo alone is ~2.5 GB in float32.
MAX_LOADED = 4

__all__ = ["Availability", "Backend", "BackendUnavailable", "BACKENDS", "BACKEND_CHOICES", "OFFLINE_DEFAULT",
           "backend_status", "resolve_backend_name", "load_backend"]

# Loaded backends, least recently used first. ``_lock`` guards the two dicts and is never held during
# a load; a load holds only its own model's lock, so a cached lookup never waits for another model.
# A model's lock is kept after its load (one small lock per model identity ever asked for), so every
# request for that model always meets the same lock.
_loaded: OrderedDict[tuple, Backend] = OrderedDict()
_load_locks: dict[tuple, threading.Lock] = {}
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
    with _lock:
        cached = _cached(key)
        if cached is not None:
            return cached
        key_lock = _load_locks.setdefault(key, threading.Lock())
    with key_lock:  # two requests for a model not loaded yet load it once: the second finds it cached
        with _lock:
            cached = _cached(key)
            if cached is not None:
                return cached
            _evict_down_to(MAX_LOADED - 1)  # room before the load: at most MAX_LOADED models in memory
        backend = cls(cfg)
        with _lock:
            _loaded[key] = backend
            _evict_down_to(MAX_LOADED)  # other models may have finished loading meanwhile
            return backend


def _cached(key: tuple) -> Backend | None:
    """The loaded backend for ``key``, marked most recently used; call with ``_lock`` held."""
    if key not in _loaded:
        return None
    _loaded.move_to_end(key)
    return _loaded[key]


def _evict_down_to(count: int) -> None:
    """Drop the least recently used backends until ``count`` remain; call with ``_lock`` held."""
    while len(_loaded) > count:
        _loaded.popitem(last=False)
