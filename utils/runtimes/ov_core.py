"""The OpenVINO core of this process: the CPU plugin's capability report and how models are compiled.

``openvino`` is imported on first use only: it takes a second to import, which backends that do not
use it (and ``--help``) should not pay.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from utils import devices

DEVICE = "CPU"
# OpenVINO's names of the project's precisions.
OV_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


@lru_cache(maxsize=None)
def core() -> Any:
    import openvino as ov

    return ov.Core()


@lru_cache(maxsize=None)
def capabilities() -> tuple[str, ...]:
    """The CPU plugin's ``OPTIMIZATION_CAPABILITIES`` (e.g. BF16, FP32, INT8); empty without OpenVINO."""
    try:
        return tuple(core().get_property(DEVICE, "OPTIMIZATION_CAPABILITIES"))
    except (ImportError, RuntimeError):
        return ()


def version() -> str:
    import openvino as ov

    return ov.get_version()


def compile_config(precision: str) -> dict[str, Any]:
    """Compile properties: the precision, the project's thread count, and latency over throughput (one
    image at a time, as the pipeline calls it)."""
    return {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "INFERENCE_NUM_THREADS": devices.thread_count(),
            "PERFORMANCE_HINT": "LATENCY"}


def compile_ir(xml: Path, precision: str, blob_cache: Path) -> Any:
    """Compile the IR at ``xml`` for the CPU; OpenVINO keeps the compiled blob in ``blob_cache`` so the
    next process skips compilation. The blob holds no weights (``OPTIMIZE_SIZE``: they are read from the
    IR beside it), else SD-Turbo's UNet would be stored twice (3.5 GB more); x4plus still compiles from
    it in 0.3 s."""
    blob_cache.mkdir(parents=True, exist_ok=True)
    return core().compile_model(str(xml), DEVICE, {**compile_config(precision), "CACHE_DIR": str(blob_cache),
                                                   "CACHE_MODE": "OPTIMIZE_SIZE"})


class CompiledModule:
    """A compiled model called like a torch module: tensors in (as float32), float32 CPU tensors out,
    one tensor or a tuple when the model has several outputs. Calls are serialised (one infer request)."""

    def __init__(self, compiled: Any):
        import threading

        self.compiled = compiled
        self._request = compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, *inputs):
        import torch

        arrays = [t.detach().to("cpu", torch.float32).contiguous().numpy() for t in inputs]
        with self._lock:
            results = self._request.infer(arrays)
        outs = tuple(torch.from_numpy(results[o]) for o in self.compiled.outputs)
        return outs[0] if len(outs) == 1 else outs
