"""InvSR (SD-Turbo + noise predictor) as a backend: the loaded models, run with any settings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.backends.invsr import diffusion
from utils.backends.invsr.weights import WeightsNotFound, resolve_weights
from utils.devices import pick_device
from utils.tiling.chopping import ProgressFn


def _model_spec(cfg: DictConfig) -> tuple:
    """(weights, noise-predictor params, device, dtype, VAE tiling): everything that loading depends on."""
    try:
        weights = resolve_weights(cfg)
    except WeightsNotFound as exc:
        raise BackendUnavailable(str(exc)) from exc
    device = pick_device()
    try:
        dtype = diffusion.model_dtype(cfg, device)
    except ValueError as exc:
        raise BackendUnavailable(f"sd_pipe.params.torch_dtype: {exc}") from exc
    return weights, diffusion.predictor_params(cfg), device, dtype, diffusion.vae_tiling(cfg, device)


class InvSRBackend(Backend):
    name = "invsr"

    def __init__(self, cfg: DictConfig):
        spec = _model_spec(cfg)
        self.weights, self.vae_tiling = spec[0], spec[4]
        self.models = diffusion.load_models(*spec)

    @classmethod
    def availability(cls, cfg: DictConfig) -> Availability:
        try:
            resolve_weights(cfg)
        except WeightsNotFound as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @classmethod
    def model_key(cls, cfg: DictConfig):
        weights, params, device, dtype, tiling = _model_spec(cfg)
        return (str(weights.sd_dir), str(weights.noise_predictor), json.dumps(params, sort_keys=True),
                str(device), str(dtype), tiling)

    @property
    def device(self) -> str:
        return str(self.models.device)

    def weight_files(self) -> list[Path]:
        return [self.weights.sd_dir, self.weights.noise_predictor]

    def engine(self) -> dict[str, str]:
        return {"runtime": "torch", "precision": str(self.models.dtype).removeprefix("torch."),
                "device": self.models.device.type}

    @property
    def identity(self) -> dict:
        # diffusers' tiled VAE (CUDA only) decodes differently from the whole-latent VAE.
        return {**super().identity, "tiled_vae": self.vae_tiling}

    def upscale(self, lr: torch.Tensor, settings, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        return diffusion.upscale(self.models, lr, settings, progress)
