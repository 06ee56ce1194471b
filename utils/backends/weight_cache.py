"""Weights converted from ncnn files, cached as safetensors under ``weights/``.

A cache records the sha256 of the files it was made from, so a different source is converted again
instead of being served stale.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from utils.checksums import file_sha256

CACHE_FORMAT = "1"  # bump when a stored layout changes, so old caches are converted again


def cached_conversion(cache: Path, param: Path, weights: Path,
                      convert: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The state dict in ``cache`` when it was made from these (param, bin) files, else ``convert()``'s,
    written to ``cache`` first."""
    key = {"format": CACHE_FORMAT, "param_sha256": file_sha256(param), "bin_sha256": file_sha256(weights)}
    if cache.is_file():
        with safe_open(str(cache), framework="pt") as fh:
            if fh.metadata() == key:
                return load_file(str(cache))
    state = convert()
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.", suffix=".part")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=key)
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return state
