"""InvSR (SD-Turbo + noise predictor) as a backend: the loaded models, run with any settings."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch
from omegaconf import DictConfig

from utils.backends.base import Availability, Backend, BackendUnavailable
from utils.backends.invsr import sampling
from utils.backends.invsr.models import load_models, predictor_params, vae_tiling
from utils.backends.invsr.precision import runtime_choice, torch_dtype
from utils.backends.invsr.weights import WeightsNotFound, resolve_weights
from utils.tiling.chopping import ProgressFn


def _model_spec(cfg: DictConfig) -> tuple:
    """(weights, noise-predictor params, runtime choice, VAE tiling): everything that loading depends on."""
    try:
        weights = resolve_weights(cfg)
    except WeightsNotFound as exc:
        raise BackendUnavailable(str(exc)) from exc
    choice = runtime_choice(cfg)
    return weights, predictor_params(cfg), choice, vae_tiling(cfg, torch.device(choice.device))


class InvSRBackend(Backend):
    name = "invsr"

    def __init__(self, cfg: DictConfig):
        self.weights, params, self.choice, self.vae_tiling = _model_spec(cfg)
        if self.choice.runtime == "openvino":
            from utils.backends.invsr.openvino_models import load_openvino_models

            self.models = load_openvino_models(self.weights, params, self.choice.precision)
        else:
            self.models = load_models(self.weights, params, torch.device(self.choice.device),
                                      torch_dtype(self.choice), self.vae_tiling)

    @classmethod
    def availability(cls, cfg: DictConfig) -> Availability:
        try:
            resolve_weights(cfg)
        except WeightsNotFound as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @classmethod
    def model_key(cls, cfg: DictConfig):
        weights, params, choice, tiling = _model_spec(cfg)
        return (str(weights.sd_dir), str(weights.noise_predictor), json.dumps(params, sort_keys=True), choice, tiling)

    @property
    def device(self) -> str:
        return str(self.models.device)

    def weight_files(self) -> list[Path]:
        return [self.weights.sd_dir, self.weights.noise_predictor]

    def engine(self) -> dict[str, str]:
        return {"runtime": self.choice.runtime, "precision": self.choice.precision, "device": self.models.device.type}

    @property
    def identity(self) -> dict:
        # diffusers' tiled VAE (CUDA only) decodes differently from the whole-latent VAE.
        return {**super().identity, "tiled_vae": self.vae_tiling}

    def upscale(self, lr: torch.Tensor, settings, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        return sampling.upscale(self.models, lr, settings, progress)
