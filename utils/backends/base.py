"""The interface every super-resolution backend implements: loaded models apart from run settings.

A backend is built from the *model* keys of a config only (weights, device, dtype) and cached by that
identity (:meth:`Backend.model_key`); each call to :meth:`Backend.upscale` gets the run's
:class:`~utils.settings.RunSettings`, so one loaded model serves any settings. What a backend is
(scales, settings it reads, runtimes, tile defaults) is declared once, in :data:`utils.settings.SPECS`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Hashable, Optional

import torch
from omegaconf import DictConfig

from utils.checksums import weights_sha256
from utils.config import runtime_setting
from utils.runtimes.policy import Choice, RuntimeRefused, choose
from utils.settings import SPECS, BackendSpec, RunSettings
from utils.tiling.chopping import (FEATHER, ProgressFn, blend_patches, context_grid, context_window, multiply_windows,
                                   pad_to_multiple)
from utils.tiling.smart_chopping import plan_chopping


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, what the user should do about it."""

    ok: bool
    reason: str = ""


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked to run but cannot (missing weights, missing package)."""


def backend_choice(backend: str, cfg: DictConfig, runtime: Optional[str] = None) -> Choice:
    """How ``backend`` runs for the config's ``runtime``/``precision`` (``runtime`` instead of the
    config's when given), ``auto`` resolved for this machine; BackendUnavailable for what cannot run here."""
    configured, precision = runtime_setting(cfg)
    try:
        return choose(backend, SPECS[backend].runtimes, runtime or configured, precision)
    except RuntimeRefused as exc:
        raise BackendUnavailable(str(exc)) from None


@dataclass(frozen=True)
class ModelCard:
    """What a user needs to choose a model: shown in the app's Models panel and in ``--help``."""

    title: str        # the model and its weights
    use: str          # what it is good for
    scales: str       # native scales, e.g. "×2 and ×4"
    license: str      # of the weights
    source: str       # where the weights come from
    speed: str        # measured on the project's 2-core CPU

    def text(self) -> str:
        return (f"{self.title}: {self.use} Native {self.scales}. Weights: {self.source} ({self.license}). "
                f"Speed: {self.speed}.")


class Backend(ABC):
    """An upscaler holding loaded models.

    ``upscale`` takes a b×3×h×w float32 RGB tensor in [0, 1] (on the CPU) and returns a
    b×3×(s·h)×(s·w) float32 tensor in [0, 1] on the CPU, s = ``settings.native_scale()``.
    Large images are processed in patches through :mod:`utils.tiling`; ``progress(done, total)`` is
    called after each patch and may raise to cancel.
    """

    name: ClassVar[str]
    card: ClassVar[Optional[ModelCard]] = None
    # From the backend's spec: every native scale, ascending, and the largest (what outscale 4 runs at).
    scales: ClassVar[tuple[int, ...]]
    scale: ClassVar[int]

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if getattr(cls, "name", None) in SPECS:
            cls.scales, cls.scale = SPECS[cls.name].scales, SPECS[cls.name].scale

    @classmethod
    def spec(cls) -> BackendSpec:
        return SPECS[cls.name]

    def __init__(self, cfg: DictConfig):
        """Load the models that ``cfg``'s model keys name; run settings never reach the constructor."""

    @classmethod
    @abstractmethod
    def availability(cls, cfg: DictConfig) -> Availability:
        """Cheap check (no model loading) of whether this backend can run with ``cfg``."""

    @classmethod
    def model_key(cls, cfg: DictConfig) -> Hashable:
        """What identifies the loaded models (weights, device, dtype): equal keys share one instance."""
        return ()

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the model runs, for display (e.g. "cpu", "cuda:0", "vulkan:0")."""

    def weight_files(self) -> list[Path]:
        """The files (or folders) of weights this instance was loaded from."""
        return []

    def engine(self) -> dict[str, str]:
        """How the models run: runtime, precision and the kind of device."""
        return {"runtime": "torch", "precision": "float32", "device": self.device.split(":")[0]}

    @property
    def identity(self) -> dict[str, Any]:
        """What made an output, besides the settings, recorded beside every result for resuming: the
        content (sha256) of every weight file, and how it ran."""
        return {"backend": self.name, **self.engine(),
                "weights": {str(path.name): weights_sha256(path) for path in self.weight_files()}}

    @property
    def runtime(self) -> str:
        """What runs the model and in which precision, for display ("openvino bfloat16")."""
        engine = self.engine()
        return f"{engine['runtime']} {engine['precision']}"

    @abstractmethod
    def upscale(self, lr: torch.Tensor, settings: RunSettings,
                progress: Optional[ProgressFn] = None) -> torch.Tensor:
        """Tiles of ``settings.for_input(h, w).tile_size``."""


class TiledBackend(Backend):
    """A convolutional backend, run in tiles that each keep a context margin.

    Every output pixel comes from a tile in which it has at least ``settings.tile_margin`` input pixels
    of context (the image border aside; the spec's ``context_margin`` unless the user set one), so tiles
    agree with one whole-image forward as far as the network's receptive field allows; neighbouring
    tiles cross-fade over :data:`FEATHER` pixels only. Tiles contribute at most ``settings.tile_size``
    input pixels each way (the smart-chopping grid with the same margins when ``settings.smart_chopping``).
    Tiles start and end on multiples of the spec's ``size_multiple`` (the image is padded to one):
    attention windows and pooling are anchored at the image origin, so a tile off that grid computes
    other windows.
    """

    @abstractmethod
    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """n×3×h×w float32 in [0, 1] -> n×3×(scale·h)×(scale·w) float32 in [0, 1]; ``scale`` is one of
        :attr:`scales`."""

    def upscale(self, lr: torch.Tensor, settings: RunSettings,
                progress: Optional[ProgressFn] = None) -> torch.Tensor:
        h, w = lr.shape[-2:]
        settings = settings.for_input(h, w)
        spec = settings.spec
        scale, margin, align = spec.native_scale(settings.outscale), settings.tile_margin, spec.size_multiple
        padded = pad_to_multiple(lr, align)
        ph, pw = padded.shape[-2:]
        fixed = context_grid(ph, pw, settings.tile_size, margin, align=align)
        grid, attention = plan_chopping(padded, settings.tile_size + 2 * margin + FEATHER, fixed, settings)
        window = context_window(grid, ph, pw, margin, scale)
        if attention is not None:
            window = multiply_windows(window, attention)
        out = blend_patches(padded, lambda x: self._patch(x, scale), grid, scale, batch_size=settings.batch_size,
                            window=window, progress=progress)
        return out[..., :h * scale, :w * scale]
