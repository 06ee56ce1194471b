"""Bicubic interpolation: the baseline every learned model must beat."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from utils.backends.base import Availability, TiledBackend


class BicubicBackend(TiledBackend):
    name = "bicubic"

    @classmethod
    def availability(cls, cfg) -> Availability:
        return Availability(True)

    @property
    def device(self) -> str:
        return "cpu"

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp_(0, 1)
