"""Pick where models run: CUDA in float16, then Apple MPS, then the CPU in float32."""
from __future__ import annotations

import os

import torch


def pick_device(prefer: str | None = None) -> torch.device:
    """``prefer`` ("cuda", "mps", "cpu") wins when available; otherwise the best device present."""
    if prefer:
        dev = torch.device(prefer)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA was requested but no CUDA device is available")
        if dev.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError("MPS was requested but is not available on this machine")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision only where it is fast and safe (CUDA); MPS and CPU run float32."""
    return torch.float16 if device.type == "cuda" else torch.float32


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity and cgroup-limited containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
