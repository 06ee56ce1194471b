"""Pick where models run (CUDA, then Apple MPS, then the CPU), whether torch bf16 pays off on this CPU,
and the process-wide thread count. Which precision a model runs in is decided in utils.runtimes.policy."""
from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache
from pathlib import Path

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


CPUINFO = Path("/proc/cpuinfo")
# CPU flags (Linux names) under which oneDNN's bfloat16 convolutions and matmuls beat float32: the AMX
# tile units (about 0.35× float32's time for Real-ESRGAN, issue 11). AVX512-BF16 alone computes bf16
# natively too, but measured on such a Xeon (no AMX) bf16 was slower than float32: Real-ESRGAN x4plus
# 1.38×, an InvSR patch 1.33× (docs/benchmarks.md). Without either, bf16 is emulated and slower still.
FAST_BF16_FLAGS = frozenset({"amx_bf16"})


@lru_cache(maxsize=None)
def cpu_has_fast_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU runs bfloat16 faster than float32 (AMX); read at run time, False when unknown."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return not FAST_BF16_FLAGS.isdisjoint(flags)


@lru_cache(maxsize=None)
def cpu_model(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what the platform reports: speed figures and
    the studio's timings are tied to it."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_threads() -> int:
    """Cores this process may use (respects CPU affinity and cgroup-limited containers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


_threads: int | None = None


def set_threads(count: int | None = None) -> int:
    """Set the process-wide CPU thread count once, at start-up (None: every usable core).

    torch's intra-op pool and ncnn nets read it; backends never change it, so loading a second
    model cannot slow down the first.
    """
    global _threads
    _threads = max(1, int(count)) if count else cpu_threads()
    torch.set_num_threads(_threads)
    return _threads


def thread_count() -> int:
    """The count :func:`set_threads` chose, or every usable core when no entry point set one."""
    return _threads or cpu_threads()

