"""The networks of a training run: the frozen SD-Turbo around a trainable noise predictor, plus the
helpers that freeze a module for a pass or trade compute for activation memory."""
from __future__ import annotations

from contextlib import contextmanager
from functools import partial
from typing import Iterator, Optional

import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.checkpoint import checkpoint

from utils.backends.invsr.models import InvSRModels, assemble_models, predictor_params
from utils.backends.invsr.noise_predictor import NoisePredictor, load_noise_predictor
from utils.backends.invsr.weights import resolve_sd_dir

_MIXED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "no": torch.float32}


def frozen_dtype(mixed_precision: str, device: torch.device) -> torch.dtype:
    """The dtype of the frozen VAE/UNet/text encoder: the mixed-precision dtype on CUDA, else float32."""
    return _MIXED_DTYPES[mixed_precision] if device.type == "cuda" else torch.float32


def build_predictor(cfg: DictConfig) -> NoisePredictor:
    """From ``model_start.params``; initialised from ``model_start.ckpt_path`` (strictly) when set."""
    predictor = NoisePredictor(**predictor_params(cfg))
    if cfg.model_start.ckpt_path:
        load_noise_predictor(predictor, cfg.model_start.ckpt_path)
    return predictor


def build_training_models(cfg: DictConfig, device: torch.device, dtype: torch.dtype) -> InvSRModels:
    """SD-Turbo (resolved like the sampler does, local files only) frozen in ``dtype`` around a
    trainable float32 predictor (train mode, gradients on)."""
    models = assemble_models(resolve_sd_dir(cfg), build_predictor(cfg), device, dtype)
    models.noise_predictor.float().train().requires_grad_(True)
    return models


def enable_gradient_checkpointing(module: nn.Module) -> int:
    """Recompute the activations of every diffusers block of ``module`` in the backward pass (the
    blocks check ``gradient_checkpointing``); returns how many blocks were switched."""
    count = 0
    for block in module.modules():
        if hasattr(block, "gradient_checkpointing"):
            block._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
            block.gradient_checkpointing = True
            count += 1
    return count


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Eval mode, no parameter gradients, for the forwards inside the block; restored afterwards.

    Autograd records at forward time, so a backward run after the block still gives the module's
    parameters no gradient, while gradients still flow through it to its inputs.
    """
    was_training = module.training
    flags = [p.requires_grad for p in module.parameters()]
    module.eval().requires_grad_(False)
    try:
        yield module
    finally:
        module.train(was_training)
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def count_parameters(module: Optional[nn.Module]) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())
