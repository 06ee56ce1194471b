"""InvSR (SD-Turbo + noise predictor) as a backend of the studio."""
from __future__ import annotations

from typing import Optional

import torch
from omegaconf import DictConfig

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.chopping import ProgressFn
from utils.config import with_overrides
from utils.invsr_weights import WeightsNotFound, resolve_weights


class InvSRBackend(Backend):
    name = "invsr"

    def __init__(self, cfg: DictConfig):
        super().__init__(cfg)
        from sampler_invsr import InvSamplerSR

        try:
            # The pipeline colour-fixes every backend's output the same way afterwards.
            self.sampler = InvSamplerSR(with_overrides(cfg, {"color_fix": "none"}))
        except WeightsNotFound as exc:
            raise BackendUnavailable(str(exc)) from exc

    @classmethod
    def availability(cls, cfg: DictConfig) -> Availability:
        try:
            resolve_weights(cfg)
        except WeightsNotFound as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @property
    def device(self) -> str:
        return str(self.sampler.device)

    def upscale(self, lr: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        return self.sampler.upscale(lr, progress)
