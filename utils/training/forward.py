"""One training forward of InvSR's noise predictor, built from the sampler's own pieces
(utils.backends.invsr.sampling), so what is trained is exactly what the sampler runs for one step:

    z_lq = VAE(bicubic×4(lq))·s            z_t = z_lq + σ_t · predictor(lq, t − 1)   (reparameterised)
    ε    = UNet(z_t / √(σ_t² + 1), t − 1, positive prompt)
    z0   = z_t − σ_t · ε                    target z_gt = VAE(gt)·s

t is drawn per sample from the configured timesteps; VAE, UNet and prompt are frozen.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

from utils.backends.invsr.models import InvSRModels
from utils.backends.invsr.sampling import encode_latent, shifted_scheduler, upsample_lr


@dataclass(frozen=True)
class TimestepTable:
    """The trained timesteps as the models see them: ``timesteps`` (K,) float t − 1 and ``sigmas`` (K,)."""

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    @classmethod
    def build(cls, scheduler_config: dict, timesteps: Sequence[int], device: torch.device) -> "TimestepTable":
        scheduler = shifted_scheduler(scheduler_config, timesteps, device)
        return cls(scheduler.timesteps.float(), scheduler.sigmas[:len(timesteps)].float().to(device))

    def __len__(self) -> int:
        return len(self.timesteps)


@dataclass(frozen=True)
class ForwardNoise:
    """Every random draw of one forward: ``t_index`` (b,) into the table, and standard-normal
    latent-shaped (b×C×h×w) draws for the two VAE posteriors and the predictor's Gaussian."""

    t_index: torch.Tensor
    vae_lq: torch.Tensor
    predictor: torch.Tensor
    vae_gt: torch.Tensor

    @classmethod
    def draw(cls, latent_shape: tuple[int, ...], num_timesteps: int, device: torch.device,
             generator: Optional[torch.Generator] = None) -> "ForwardNoise":
        def randn() -> torch.Tensor:
            return torch.randn(latent_shape, device=device, generator=generator)

        t_index = torch.randint(num_timesteps, (latent_shape[0],), device=device, generator=generator)
        return cls(t_index, randn(), randn(), randn())


@dataclass(frozen=True)
class ForwardResult:
    """float32 latents b×C×h×w: the one-step estimate ``z0`` (differentiable in the predictor), the
    target ``z_gt``, the start latent ``z_t`` and the predicted noise map ``start_noise``."""

    z0: torch.Tensor
    z_gt: torch.Tensor
    z_t: torch.Tensor
    start_noise: torch.Tensor


def latent_shape(m: InvSRModels, lq_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """b×C×(4h/f)×(4w/f) for a b×3×h×w LR batch (f: the VAE's down factor, C: its latent channels)."""
    factor = 2 ** (len(m.vae.config.block_out_channels) - 1)
    b, _, h, w = lq_shape
    return b, m.vae.config.latent_channels, 4 * h // factor, 4 * w // factor


def training_forward(m: InvSRModels, predictor: nn.Module, lq: torch.Tensor, gt: torch.Tensor,
                     table: TimestepTable, noise: ForwardNoise, prompt_embeds: torch.Tensor) -> ForwardResult:
    """``lq`` b×3×h×w and ``gt`` b×3×4h×4w in [0, 1]; ``predictor`` is the trainable (possibly
    accelerator-wrapped) noise predictor; ``prompt_embeds`` 1×77×D. Frozen models run in ``m.dtype``."""
    with torch.no_grad():
        z_lq = encode_latent(m.vae, upsample_lr(lq.to(m.dtype)), lambda like: noise.vae_lq.to(like)).float()
        z_gt = encode_latent(m.vae, (gt * 2 - 1).to(m.dtype), lambda like: noise.vae_gt.to(like)).float()
    t = table.timesteps[noise.t_index]
    sigma = table.sigmas[noise.t_index].view(-1, 1, 1, 1)
    start_noise = predictor(lq.float(), t, noise.predictor)
    z_t = z_lq + sigma * start_noise.float()
    x_in = (z_t / (sigma ** 2 + 1).sqrt()).to(m.dtype)
    embeds = prompt_embeds.expand(lq.shape[0], -1, -1)
    eps = m.unet(x_in, t, encoder_hidden_states=embeds).sample.float()
    return ForwardResult(z0=z_t - sigma * eps, z_gt=z_gt, z_t=z_t, start_noise=start_noise)
