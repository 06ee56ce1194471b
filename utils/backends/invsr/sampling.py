"""InvSR ×4 super-resolution (Yue, Liao, Loy, CVPR 2025): one to five SD-Turbo steps started from a
predicted noise map. The algorithm and its constants follow ../shared/docs/invsr-algorithm.md.

Randomness (reproducible for a given ``seed`` on any device): for every image of a batch, the VAE
posterior sample uses a CPU ``torch.Generator`` seeded with ``seed`` and the noise predictor's sample
one seeded with ``seed + 1``; each draws one standard-normal latent-shaped tensor per patch in patch
order. So an image's result depends neither on the chopping batch size nor on the other images of
its batch. The generators restart at every call.

The models are called stage by stage (``encode``, ``predict_noise``, ``denoise``, ``decode``): torch's
:class:`~utils.backends.invsr.models.InvSRModels` and the OpenVINO parts
(:class:`~utils.backends.invsr.openvino_models.OpenVINOModels`) offer the same stages.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

from utils.backends.invsr.models import vae_moments
from utils.config import SCALE
from utils.tiling.chopping import PatchGrid, ProgressFn, blend_patches, pad_to_multiple, reflect_pad_to_patch
from utils.settings import RunSettings
from utils.tiling.smart_chopping import plan_chopping

if TYPE_CHECKING:
    from utils.backends.invsr.models import InvSRModels

POSITIVE_PROMPT = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, "
                   "hyper sharpness, perfect without deformations")
NEGATIVE_PROMPT = ("Low quality, blurring, jpeg artifacts, deformed, over-smooth, cartoon, noisy, "
                   "painting, drawing, sketch, oil painting")


def upscale(m: "InvSRModels", im_lq: torch.Tensor, settings: RunSettings,
            progress: Optional[ProgressFn] = None) -> torch.Tensor:
    """b×3×h×w in [0, 1] -> b×3×4h×4w float32 CPU tensor in [0, 1] (no colour fix: the pipeline does it).
    The LR patch size is ``settings.for_input(h, w).tile_size`` (the reference's rule unless one is set)."""
    x = im_lq.to(m.device, torch.float32)
    b, _, h, w = x.shape
    pch = settings.for_input(h, w).tile_size
    padded, top, left = reflect_pad_to_patch(x, pch)
    if padded.shape[-2:] != (pch, pch):
        padded = pad_to_multiple(padded, m.mod_lq)
    fixed = PatchGrid.regular(padded.shape[-2], padded.shape[-1], pch, pch // 2)
    grid, window = plan_chopping(padded, pch, fixed, settings)
    gen_vae = [torch.Generator().manual_seed(settings.seed) for _ in range(b)]
    gen_noise = [torch.Generator().manual_seed(settings.seed + 1) for _ in range(b)]
    with torch.inference_mode():
        out = blend_patches(padded, lambda p: sample_patches(m, p, settings, gen_vae, gen_noise), grid, SCALE,
                            batch_size=settings.batch_size, window=window, progress=progress)
        out = out[:, :, top * SCALE:(top + h) * SCALE, left * SCALE:(left + w) * SCALE].float().cpu()
    return out.clamp(0.0, 1.0)  # outside inference mode: callers get an ordinary tensor


def sample_patches(m: "InvSRModels", lr: torch.Tensor, settings: RunSettings, gen_vae: list[torch.Generator],
                   gen_noise: list[torch.Generator]) -> torch.Tensor:
    """n×3×p×p LR patches in [0, 1] -> n×3×4p×4p float32 in [0, 1] (one InvSR run, no padding).

    Row k draws its noise from generator ``k % len(generators)``: blend_patches stacks the patches
    patch-major, one row per image of the batch.
    """
    n = lr.shape[0]
    lr = lr.to(m.device, m.dtype)
    up = upsample_lr(lr)
    scheduler = shifted_scheduler(m.scheduler_config, settings.timesteps, m.device)
    t_start = scheduler.timesteps[:1].repeat(n)

    mean, std = m.encode(up)
    z0 = sample_latent(mean, std, _randn(gen_vae, mean), m.scaling_factor)
    noise = m.predict_noise(lr, t_start, _randn(gen_noise, z0))
    x = scheduler.add_noise(z0, noise.to(z0.dtype), t_start)

    guidance = settings.cfg_scale
    embeds = m.prompt_embeds(POSITIVE_PROMPT).repeat(n, 1, 1)
    if guidance > 1:
        embeds = torch.cat([m.prompt_embeds(NEGATIVE_PROMPT).repeat(n, 1, 1), embeds])
    for t in scheduler.timesteps:
        x_in = torch.cat([x, x]) if guidance > 1 else x
        eps = m.denoise(scheduler.scale_model_input(x_in, t), t, embeds)
        if guidance > 1:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        x = scheduler.step(eps, t, x).prev_sample
    image = m.decode(x / m.scaling_factor)
    return (image / 2 + 0.5).clamp(0, 1).float()


def shifted_scheduler(scheduler_config: dict, timesteps: Sequence[int], device: torch.device):
    """An Euler scheduler set to the user-facing descending ``timesteps`` shifted by one: the scheduler
    (and every model) runs at T − 1, so timestep 200 means training index 199. Its ``timesteps`` are
    those float indices, its ``sigmas`` their training σ plus the final one."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler.from_config(scheduler_config)
    scheduler.set_timesteps(timesteps=[t - 1 for t in timesteps], device=device)
    return scheduler


def upsample_lr(lr: torch.Tensor) -> torch.Tensor:
    """b×3×h×w in [0, 1] -> b×3×4h×4w in [-1, 1]: bicubic, no antialias, no clamp (the VAE's input)."""
    h, w = lr.shape[-2:]
    return F.interpolate(lr, size=(h * SCALE, w * SCALE), mode="bicubic", align_corners=False) * 2 - 1


def sample_latent(mean: torch.Tensor, std: torch.Tensor, noise: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """One sample of the VAE posterior (``noise``: a standard-normal draw shaped like ``mean``) × scaling_factor."""
    return (mean + std * noise) * scaling_factor


def encode_latent(vae: torch.nn.Module, image: torch.Tensor,
                  noise_like: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """b×3×H×W in [-1, 1] -> one sample of the VAE posterior × scaling_factor (b×C×H/8×W/8);
    ``noise_like(mean)`` gives the standard-normal draw."""
    mean, std = vae_moments(vae, image)
    return sample_latent(mean, std, noise_like(mean), vae.config.scaling_factor)


def _randn(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU one row at a time, row k from
    ``generators[k % len(generators)]`` (so batching and the device do not change the values)."""
    draws = [torch.randn((1, *like.shape[1:]), generator=generators[k % len(generators)])
             for k in range(like.shape[0])]
    return torch.cat(draws).to(like.device, like.dtype)
