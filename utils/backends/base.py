"""The interface every super-resolution backend implements: loaded models apart from run settings.

A backend is built from the *model* keys of a config only (weights, device, dtype) and cached by that
identity (:meth:`Backend.model_key`); each call to :meth:`Backend.upscale` gets the run's
:class:`~utils.pipeline.settings.RunSettings`, so one loaded model serves any settings.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Hashable, Optional

import torch
from omegaconf import DictConfig

from utils.config import SCALE
from utils.tiling.chopping import FEATHER, ProgressFn, blend_patches, context_grid, context_window, multiply_windows
from utils.tiling.smart_chopping import plan_chopping

if TYPE_CHECKING:
    from utils.pipeline.settings import RunSettings


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, what the user should do about it."""

    ok: bool
    reason: str = ""


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked to run but cannot (missing weights, missing package)."""


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
    b×3×(s·h)×(s·w) float32 tensor in [0, 1] on the CPU, s = :meth:`native_scale` of the settings.
    Large images are processed in patches through :mod:`utils.tiling`; ``progress(done, total)`` is
    called after each patch and may raise to cancel.
    """

    name: ClassVar[str]
    scale: ClassVar[int] = SCALE  # the largest native scale: what outscale 4 runs at
    # Every scale the backend produces without resampling, ascending; the last is ``scale``.
    scales: ClassVar[tuple[int, ...]] = (SCALE,)
    card: ClassVar[Optional[ModelCard]] = None

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

    @classmethod
    def native_scale(cls, settings: "RunSettings") -> int:
        """The scale :meth:`upscale` produces for ``settings``: the smallest native scale that reaches
        ``settings.outscale`` (a ×2 model for outscale 2 instead of ×4 and a downscale)."""
        return next((s for s in cls.scales if s >= settings.outscale), cls.scale)

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the model runs, for display (e.g. "cpu", "cuda:0", "vulkan:0")."""

    @property
    def identity(self) -> dict[str, Any]:
        """What made an output, besides the settings: recorded beside every result for resuming."""
        return {"backend": self.name}

    @property
    def runtime(self) -> str:
        """What runs the model and in which precision, for display ("openvino bfloat16"); "" if unnamed."""
        made = self.identity
        return f"{made['runtime']} {made['precision']}" if "runtime" in made else ""

    @abstractmethod
    def upscale(self, lr: torch.Tensor, settings: "RunSettings",
                progress: Optional[ProgressFn] = None) -> torch.Tensor:
        ...


class TiledBackend(Backend):
    """A convolutional backend, run in tiles that each keep a context margin.

    Every output pixel comes from a tile in which it has at least ``tile_margin`` input pixels of
    context (the image border aside), so tiles agree with one whole-image forward as far as the
    network's receptive field allows; neighbouring tiles cross-fade over :data:`FEATHER` pixels only.
    Tiles contribute at most ``settings.tile_size`` input pixels each way (the smart-chopping grid
    with the same margins when ``settings.smart_chopping``).
    """

    # Input pixels of context that make a tile match the whole-image result (≥ 45 dB), from the
    # network's receptive field; ``settings.tile_margin`` overrides it.
    context_margin: ClassVar[int] = 16

    @abstractmethod
    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        """n×3×h×w float32 in [0, 1] -> n×3×(scale·h)×(scale·w) float32 in [0, 1]; ``scale`` is one of
        :attr:`scales`."""

    def tile_margin(self, settings: "RunSettings") -> int:
        return self.context_margin if settings.tile_margin is None else settings.tile_margin

    def upscale(self, lr: torch.Tensor, settings: "RunSettings",
                progress: Optional[ProgressFn] = None) -> torch.Tensor:
        h, w = lr.shape[-2:]
        scale, margin = self.native_scale(settings), self.tile_margin(settings)
        fixed = context_grid(h, w, settings.tile_size, margin)
        grid, attention = plan_chopping(lr, settings.tile_size + 2 * margin + FEATHER, fixed, settings)
        window = context_window(grid, h, w, margin, scale)
        if attention is not None:
            window = multiply_windows(window, attention)
        return blend_patches(lr, lambda x: self._patch(x, scale), grid, scale, batch_size=settings.batch_size,
                             window=window, progress=progress)
