"""Bicubic interpolation: the baseline every learned model must beat."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from utils.backends.base import Availability, Backend
from utils.chopping import PatchGrid, ProgressFn, blend_patches
from utils.smart_chopping import plan_chopping


class BicubicBackend(Backend):
    name = "bicubic"

    @classmethod
    def availability(cls, cfg) -> Availability:
        return Availability(True)

    @property
    def device(self) -> str:
        return "cpu"

    def _patch(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp_(0, 1)

    def upscale(self, lr: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        tile, overlap = self.cfg.bicubic.tile_size, self.cfg.bicubic.tile_overlap
        fixed = PatchGrid.balanced(lr.shape[-2], lr.shape[-1], tile, overlap)
        grid, window = plan_chopping(lr, tile, fixed, self.cfg)
        with torch.inference_mode():
            return blend_patches(lr, self._patch, grid, self.scale, window=window, progress=progress)
