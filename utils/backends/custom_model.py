"""A user's own model file, loaded safely and checked before any batch uses it.

Only tensors are ever read: ``.safetensors`` through safetensors, ``.pth`` / ``.pt`` / ``.ckpt`` through
spandrel's restricted unpickler, which refuses every Python global but the few that rebuild tensors, so
a file whose unpickling would run code is refused before anything runs (``.pt`` too: spandrel would try
it as TorchScript first, which this module never does). spandrel then detects the architecture.

Every failure is one :class:`ModelFileError` whose message names the file and says what is wrong.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import spandrel
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from spandrel import (MAIN_REGISTRY, ImageModelDescriptor, ModelTiling, UnsupportedModelError,
                      canonicalize_state_dict)
from spandrel.__helpers.unpickler import RestrictedUnpickle

from utils.checksums import file_sha256

SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
SUPPORTED_SCALES = (1, 2, 3, 4, 8)
# Input pixels of context per side that keep tiles within 45 dB of one whole-image forward, by
# spandrel architecture id (scripts/measure_custom_margins.py, docs/benchmarks.md "Context margins of
# users' models"). ESRGAN and SPAN measured with trained weights; SwinIR, OmniSR and SAFMN with random
# ones (45 dB at 8, 8 and 16 px), so twice the measured margin or more. Compact's is exact from its depth
# (see :func:`context_margin`).
CONTEXT_MARGINS = {"ESRGAN": 40, "SPAN": 22, "SwinIR": 32, "OmniSR": 32, "SAFMN": 32}
# Architectures not measured: attention and deep U-Nets reach far, so a wide margin.
DEFAULT_CONTEXT_MARGIN = 64
# Convolutional architectures: any tile offset computes the same pixels. Others get tiles aligned to
# their attention window (``model.window_size``) or, without one, to DEFAULT_ALIGNMENT: measured, a
# SwinIR tile off its 8-px window grid drifts to 53 dB, on it 138 dB (docs/benchmarks.md).
CONVOLUTIONAL = ("ESRGAN", "Compact", "SPAN")
DEFAULT_ALIGNMENT = 16
# Side of the probe input run before a model is accepted (rounded up to the model's size rules).
PROBE_SIZE = 16


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and the reason."""


def check_model_path(path: Path) -> None:
    """Cheap checks of a model file's name and presence (nothing is read)."""
    if path.suffix.lower() not in SUFFIXES:
        raise ModelFileError(f"{path.name}: not a model file this program reads; use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path``, read as tensors only (see the module docstring)."""
    check_model_path(path)
    try:
        if path.suffix.lower() == ".safetensors":
            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", pickle_module=RestrictedUnpickle)
    except pickle.UnpicklingError as exc:
        if "is forbidden" in str(exc):
            raise ModelFileError(
                f"{path.name}: refused: it holds Python objects besides tensors ({exc}); unpickling it could "
                "run code, so nothing in it was run. Save the weights alone (a state dict), or as .safetensors"
            ) from None
        raise ModelFileError(f"{path.name}: not a PyTorch model file, or a damaged one ({exc})") from None
    except (SafetensorError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ModelFileError(f"{path.name}: cannot be read: truncated, damaged or not a model file "
                             f"({type(exc).__name__}: {exc})") from None
    if isinstance(state, dict):
        state = canonicalize_state_dict(state)
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelFileError(f"{path.name}: holds no state dict of tensors, so it is not a model's weights")
    return state


def _describe(descriptor) -> str:
    return f"a {descriptor.architecture.name} model"


def _check_runs_whole_image(path: Path, descriptor) -> ImageModelDescriptor:
    """The descriptor when the model maps an RGB image to an RGB image in one forward; else why not."""
    if not isinstance(descriptor, ImageModelDescriptor):
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} for {descriptor.purpose.lower()}, which "
                             "needs a mask besides the image; only image-to-image models are supported")
    if descriptor.purpose == "FaceSR":
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} for face restoration, which needs face "
                             "detection and alignment, not one forward over the image; refused")
    if (descriptor.input_channels, descriptor.output_channels) != (3, 3):
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} with {descriptor.input_channels} input and "
                             f"{descriptor.output_channels} output channels; only RGB (3-channel) models run here")
    if descriptor.scale not in SUPPORTED_SCALES:
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} at ×{descriptor.scale}; supported scales are "
                             f"{', '.join(f'×{s}' for s in SUPPORTED_SCALES)}")
    return descriptor


def _probe(path: Path, descriptor: ImageModelDescriptor) -> None:
    """Run a tiny h×w input (h ≠ w unless the model wants squares) and refuse a model whose output is
    not a finite 3×(s·h)×(s·w) image, before any batch starts."""
    rules = descriptor.size_requirements
    h = w = PROBE_SIZE
    if not rules.square:
        w += rules.multiple_of
    pad_w, pad_h = rules.get_padding(w, h)
    h, w = h + pad_h, w + pad_w
    probe = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0))
    try:
        out = descriptor(probe)
    except Exception as exc:  # any failure of a foreign model is the file's problem, reported as such
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} that fails on a {h}×{w} test image "
                             f"({type(exc).__name__}: {exc}); refused") from None
    want = (1, 3, h * descriptor.scale, w * descriptor.scale)
    if tuple(out.shape) != want:
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} whose output on a {h}×{w} test image has shape "
                             f"{tuple(out.shape)}, not {want}; refused")
    if not torch.isfinite(out).all():
        raise ModelFileError(f"{path.name}: {_describe(descriptor)} whose output on a test image is not finite; "
                             "refused")


@dataclass(frozen=True)
class CustomModel:
    """A user's model file, detected and checked; ``descriptor`` is spandrel's (float32, CPU, eval)."""

    path: Path
    sha256: str
    descriptor: ImageModelDescriptor

    @property
    def architecture(self) -> str:
        return self.descriptor.architecture.name

    @property
    def scale(self) -> int:
        return self.descriptor.scale

    @cached_property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.descriptor.model.parameters())

    @property
    def file_size(self) -> int:
        return self.path.stat().st_size

    @property
    def context_margin(self) -> int:
        return context_margin(self.descriptor)

    @property
    def tile_alignment(self) -> int:
        return tile_alignment(self.descriptor)

    def supports(self, dtype: torch.dtype) -> bool:
        """Whether the descriptor says the model runs in ``dtype``."""
        return {torch.float32: True, torch.float16: self.descriptor.supports_half,
                torch.bfloat16: self.descriptor.supports_bfloat16}.get(dtype, False)

    def summary(self) -> str:
        """One line for lists and notices, e.g. "ESRGAN ×4, 16.7 M parameters, 67.0 MB"."""
        tiling = "" if self.descriptor.tiling == ModelTiling.SUPPORTED else ", tiling discouraged"
        count = f"{self.parameters / 1e6:.1f} M" if self.parameters >= 100_000 else f"{self.parameters / 1e3:.1f} k"
        return f"{self.architecture} ×{self.scale}, {count} parameters, {self.file_size / 1e6:.1f} MB{tiling}"


def context_margin(descriptor: ImageModelDescriptor) -> int:
    """Input pixels of context a tile needs, from the architecture's receptive field."""
    arch = descriptor.architecture.id
    if arch == "Compact":  # num_conv + 2 stacked 3×3 convolutions and a per-pixel skip: exact beyond that
        return descriptor.model.num_conv + 4
    return CONTEXT_MARGINS.get(arch, DEFAULT_CONTEXT_MARGIN)


def tile_alignment(descriptor: ImageModelDescriptor) -> int:
    """What tile starts and sizes must be multiples of (see CONVOLUTIONAL), with the size rules' multiple."""
    window = getattr(descriptor.model, "window_size", None)
    if descriptor.architecture.id in CONVOLUTIONAL:
        base = 1
    else:
        base = window if isinstance(window, int) and window > 0 else DEFAULT_ALIGNMENT
    return math.lcm(base, descriptor.size_requirements.multiple_of)


def load_custom_model(path: Path | str) -> CustomModel:
    """Read, detect and probe the model file ``path``; ModelFileError says why one cannot be used.

    Loaded once per file version (path, modification time, size): validating a config and loading its
    backend share one read. The descriptor is shared: callers copy it before changing its dtype or device.
    """
    path = Path(path)
    check_model_path(path)
    stat = path.stat()
    return _load(path.resolve(), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=4)
def _load(path: Path, mtime_ns: int, size: int) -> CustomModel:
    state = read_tensors(path)
    try:
        descriptor = MAIN_REGISTRY.load(state)
    except UnsupportedModelError:
        sample = ", ".join(list(state)[:3])
        raise ModelFileError(f"{path.name}: unknown architecture: none that spandrel {spandrel.__version__} "
                             f"knows matches its {len(state)} tensors (first keys: {sample})") from None
    except Exception as exc:  # a recognised architecture whose tensors do not fit it
        raise ModelFileError(f"{path.name}: its tensors look like a known architecture but do not load into it "
                             f"({type(exc).__name__}: {exc})") from None
    descriptor = _check_runs_whole_image(path, descriptor)
    descriptor.model.requires_grad_(False)
    descriptor.eval()
    _probe(path, descriptor)
    return CustomModel(path, file_sha256(path), descriptor)
