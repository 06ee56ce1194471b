"""Where and how the torch models sit for inference: device, dtype, frozen, memory layout."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from utils.backends.invsr.noise_predictor import NoisePredictor


def channels_last(device: torch.device) -> bool:
    """Whether the convolutional models run in channels-last layout: on the CPU oneDNN's convolutions
    are much faster that way (the VAE above all); CUDA and MPS keep the layout they were loaded in."""
    return device.type == "cpu"


def place_models(vae: torch.nn.Module, unet: torch.nn.Module, text_encoder: torch.nn.Module,
                 predictor: "NoisePredictor", device: torch.device, dtype: torch.dtype) -> None:
    """Move the models to ``device`` in ``dtype``, frozen, in the memory layout inference uses (in place).

    On CUDA the predictor stays float32 and runs under autocast, like the reference; elsewhere it takes
    the models' dtype (bfloat16 on a CPU only where it is native).
    """
    wanted = {vae: dtype, unet: dtype, text_encoder: dtype,
              predictor: torch.float32 if device.type == "cuda" else dtype}
    for m, m_dtype in wanted.items():
        # Cast only what differs: diffusers warns on every dtype cast, also a no-op one.
        if next(m.parameters()).dtype != m_dtype:
            m.to(dtype=m_dtype)
        m.to(device).eval().requires_grad_(False)
    if channels_last(device):
        for m in (vae, unet, predictor):
            m.to(memory_format=torch.channels_last)
