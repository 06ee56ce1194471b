"""The interface every super-resolution backend implements."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Optional

import torch
from omegaconf import DictConfig

from utils.chopping import ProgressFn


@dataclass(frozen=True)
class Availability:
    """Whether a backend can run here, and if not, what the user should do about it."""

    ok: bool
    reason: str = ""


class BackendUnavailable(RuntimeError):
    """Raised when a backend is asked to run but cannot (missing weights, missing package)."""


class Backend(ABC):
    """A ×``scale`` upscaler. Construction loads models; ``upscale`` runs one image.

    ``upscale`` takes a 1×3×h×w float32 RGB tensor in [0, 1] (on the CPU) and returns a
    1×3×(scale·h)×(scale·w) float32 tensor in [0, 1] on the CPU. Large images are processed in
    patches through :mod:`utils.chopping`; ``progress(done, total)`` is called after each patch and
    may raise to cancel.
    """

    name: ClassVar[str]
    scale: ClassVar[int] = 4

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    @classmethod
    @abstractmethod
    def availability(cls, cfg: DictConfig) -> Availability:
        """Cheap check (no model loading) of whether this backend can run with ``cfg``."""

    @property
    @abstractmethod
    def device(self) -> str:
        """Where the model runs, for display (e.g. "cpu", "cuda:0", "vulkan:0")."""

    @abstractmethod
    def upscale(self, lr: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        ...
