"""Throughput measured on the machine the studio runs on: the first time a model is used here (per
native scale, runtime, precision, device and CPU), one short timed run of a small tile, kept in the
user's cache folder ($XDG_CACHE_HOME, else ~/.cache) and measured again when any of these change.
Estimates use it instead of the constants measured on the project's machine."""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Optional

import torch

from utils.devices import cpu_model
from utils.settings import RunSettings

log = logging.getLogger("sr-studio")

SIDE = 64           # the timed tile, input pixels: a few seconds for the slowest model on a busy machine
WARM_UP_SIDE = 16   # an untimed first call (lazy allocations, first-call compilation)


def cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "sr-studio" / "throughput.json"


def _key(backend: str, scale: int, engine: dict) -> str:
    return f"{backend} x{scale} {engine.get('runtime')} {engine.get('precision')} {engine.get('device')} {cpu_model()}"


def _read() -> dict:
    try:
        data = json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def throughput_name(run: RunSettings) -> str:
    """What a throughput is measured for: the backend, and for the custom backend its model file's content
    (two files under one name are two models)."""
    if run.model_path is None:
        return run.backend
    from utils.backends.custom_model import load_custom_model  # loaded already, for the run's validation

    return f"{run.backend}:{load_custom_model(run.model_path).sha256[:16]}"


def measured(backend: str, scale: int) -> Optional[float]:
    """Seconds per megapixel of tile area last measured here for ``backend`` at ``scale`` (on this CPU,
    in the runtime it was last loaded with), or None."""
    found = [entry for entry in _read().values() if isinstance(entry, dict) and entry.get("backend") == backend
             and entry.get("scale") == scale and entry.get("cpu") == cpu_model()]
    latest = max(found, key=lambda e: e.get("when", 0), default=None)
    return None if latest is None else float(latest["seconds_per_megapixel"])


def calibrate(model, run: RunSettings) -> Optional[float]:
    """Time ``model`` (a loaded backend) on one small tile at ``run``'s native scale unless that was done
    here already for its runtime and precision; the seconds per megapixel, or None when it cannot be
    measured (a failure here must not stop the run)."""
    if run.spec.context_margin is None:  # InvSR: a single patch takes minutes; its constants stay
        return None
    scale, engine, name = run.native_scale(), model.engine(), throughput_name(run)
    key = _key(name, scale, engine)
    cached = _read()
    if key in cached:
        return float(cached[key]["seconds_per_megapixel"])
    one_tile = run.replace(tile_size=SIDE, smart_chopping=False)
    try:
        model.upscale(torch.rand(1, 3, WARM_UP_SIDE, WARM_UP_SIDE), one_tile)
        start = time.perf_counter()
        model.upscale(torch.rand(1, 3, SIDE, SIDE), one_tile)
        seconds = time.perf_counter() - start
    except Exception:  # noqa: BLE001 (an estimate is not worth a failed run)
        log.exception("could not time %s for the estimates", run.backend)
        return None
    rate = seconds / (SIDE * SIDE / 1e6)
    cached[key] = {"backend": name, "scale": scale, **engine, "cpu": cpu_model(), "seconds_per_megapixel": rate,
                   "when": time.time()}
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        cache_file().write_text(json.dumps(cached, indent=1))
    except OSError as exc:
        log.warning("cannot keep the measured throughput: %s", exc)
    log.info("timed %s ×%d here: %.1f s per megapixel", run.backend, scale, rate)
    return rate
