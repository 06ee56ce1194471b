"""InvSR ×4 super-resolution (Yue, Liao, Loy, CVPR 2025): one to five SD-Turbo steps started from a
predicted noise map. The algorithm and its constants follow ../shared/docs/invsr-algorithm.md.

Randomness (reproducible for a given ``seed`` on any device): for every image of a batch, the VAE
posterior sample uses a CPU ``torch.Generator`` seeded with ``seed`` and the noise predictor's sample
one seeded with ``seed + 1``; each draws one standard-normal latent-shaped tensor per patch in patch
order. So an image's result depends neither on the chopping batch size nor on the other images of
its batch. The generators restart at every call.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from utils.backends.invsr.weights import InvSRWeights
from utils.config import SCALE
from utils.devices import inference_dtype
from utils.tiling.chopping import PatchGrid, ProgressFn, blend_patches, pad_to_multiple, reflect_pad_to_patch
from utils.tiling.smart_chopping import plan_chopping

from utils.settings import RunSettings

if TYPE_CHECKING:
    from utils.backends.invsr.noise_predictor import NoisePredictor

POSITIVE_PROMPT = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, "
                   "hyper sharpness, perfect without deformations")
NEGATIVE_PROMPT = ("Low quality, blurring, jpeg artifacts, deformed, over-smooth, cartoon, noisy, "
                   "painting, drawing, sketch, oil painting")


def model_dtype(cfg: DictConfig, device: torch.device) -> torch.dtype:
    """The dtype of every InvSR model on ``device``, from ``sd_pipe.params.torch_dtype``.

    ``auto``: float16 on CUDA (the reference), bfloat16 on a CPU with AMX (about a third of float32's
    time; AVX512-BF16 alone was measured slower than float32), float32 elsewhere. An explicit dtype the
    device cannot run well (float16 on a CPU) raises ValueError.
    """
    name = str(cfg.sd_pipe.params.get("torch_dtype") or "auto").removeprefix("torch.")
    return inference_dtype(device, None if name == "auto" else name)


def channels_last(device: torch.device) -> bool:
    """Whether the convolutional models run in channels-last layout: on the CPU oneDNN's convolutions
    are much faster that way (the VAE above all); CUDA and MPS keep the layout they were loaded in."""
    return device.type == "cpu"


def vae_tiling(cfg: DictConfig, device: torch.device) -> Optional[tuple[int, int]]:
    """(latent, sample) tile sizes for diffusers' tiled VAE on CUDA, else None."""
    if cfg.tiled_vae and device.type == "cuda":
        return int(cfg.latent_tiled_size), int(cfg.sample_tiled_size)
    return None


def predictor_params(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.model_start.params, resolve=True)


@dataclass
class InvSRModels:
    """Loaded SD-Turbo components and noise predictor on one device, plus the cached prompt embeddings."""

    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler_config: dict
    noise_predictor: NoisePredictor
    device: torch.device
    dtype: torch.dtype
    _prompts: dict = field(default_factory=dict)

    @property
    def mod_lq(self) -> int:
        """LR padding multiple: (VAE factor / sf) × UNet down factor."""
        vae_sf = 2 ** (len(self.vae.config.block_out_channels) - 1)
        unet_sf = 2 ** (len(self.unet.config.block_out_channels) - 1)
        return vae_sf // SCALE * unet_sf

    def prompt_embeds(self, text: str) -> torch.Tensor:
        """1×77×D text-encoder last hidden state (padded to max length, no attention mask); computed
        once per loaded model."""
        if text not in self._prompts:
            ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            with torch.inference_mode():
                self._prompts[text] = self.text_encoder(ids.to(self.device))[0].to(self.dtype)
        return self._prompts[text]


def load_models(weights: InvSRWeights, np_params: dict, device: torch.device, dtype: torch.dtype,
                tiling: Optional[tuple[int, int]] = None) -> InvSRModels:
    """Load SD-Turbo's VAE, UNet and text encoder (diffusers/transformers, local files only) and the
    noise predictor. ``tiling``: (latent, sample) tile sizes for diffusers' tiled VAE, or None."""
    # Imported here: diffusers takes seconds to import, which no other backend (nor --help) should pay.
    from utils.backends.invsr.noise_predictor import NoisePredictor, load_noise_predictor

    predictor = load_noise_predictor(NoisePredictor(**np_params), weights.noise_predictor)
    return assemble_models(weights.sd_dir, predictor, device, dtype, tiling)


def assemble_models(sd_dir: Path, predictor: NoisePredictor, device: torch.device, dtype: torch.dtype,
                    tiling: Optional[tuple[int, int]] = None) -> InvSRModels:
    """SD-Turbo from ``sd_dir`` (local files only) around an already built ``predictor``, every model
    frozen in eval mode on ``device`` (a trainer re-enables the predictor's gradients)."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = str(sd_dir)
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet", torch_dtype=dtype, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", dtype=dtype, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer", local_files_only=True)
    scheduler_config = dict(EulerDiscreteScheduler.load_config(sd, subfolder="scheduler", local_files_only=True))
    if tiling is not None:
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = tiling
    place_models(vae, unet, text_encoder, predictor, device, dtype)
    return InvSRModels(vae, unet, text_encoder, tokenizer, scheduler_config, predictor, device, dtype)


def place_models(vae: torch.nn.Module, unet: torch.nn.Module, text_encoder: torch.nn.Module,
                 predictor: NoisePredictor, device: torch.device, dtype: torch.dtype) -> None:
    """Move the models to ``device`` in ``dtype``, frozen, in the memory layout inference uses (in place).

    On CUDA the predictor stays float32 and runs under autocast, like the reference; elsewhere it takes
    the models' dtype (bfloat16 on a CPU only with AMX, or when asked for).
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


def upscale(m: InvSRModels, im_lq: torch.Tensor, settings: RunSettings,
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


def sample_patches(m: InvSRModels, lr: torch.Tensor, settings: RunSettings, gen_vae: list[torch.Generator],
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

    z0 = encode_latent(m.vae, up, lambda like: _randn(gen_vae, like))
    autocast = torch.autocast("cuda", dtype=m.dtype) if m.device.type == "cuda" else nullcontext()
    predictor_dtype = m.noise_predictor.dtype
    with autocast:
        noise = m.noise_predictor(lr.to(predictor_dtype), t_start, _randn(gen_noise, z0).to(predictor_dtype))
    x = scheduler.add_noise(z0, noise.to(z0.dtype), t_start)

    guidance = settings.cfg_scale
    embeds = m.prompt_embeds(POSITIVE_PROMPT).repeat(n, 1, 1)
    if guidance > 1:
        embeds = torch.cat([m.prompt_embeds(NEGATIVE_PROMPT).repeat(n, 1, 1), embeds])
    for t in scheduler.timesteps:
        x_in = torch.cat([x, x]) if guidance > 1 else x
        eps = m.unet(scheduler.scale_model_input(x_in, t), t, encoder_hidden_states=embeds).sample
        if guidance > 1:
            uncond, cond = eps.chunk(2)
            eps = uncond + guidance * (cond - uncond)
        x = scheduler.step(eps, t, x).prev_sample
    image = m.vae.decode(x / m.vae.config.scaling_factor).sample
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


def encode_latent(vae: torch.nn.Module, image: torch.Tensor,
                  noise_like: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """b×3×H×W in [-1, 1] -> one sample of the VAE posterior × scaling_factor (b×C×H/8×W/8);
    ``noise_like(mean)`` gives the standard-normal draw."""
    posterior = vae.encode(image).latent_dist
    return (posterior.mean + posterior.std * noise_like(posterior.mean)) * vae.config.scaling_factor


def _randn(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU one row at a time, row k from
    ``generators[k % len(generators)]`` (so batching and the device do not change the values)."""
    draws = [torch.randn((1, *like.shape[1:]), generator=generators[k % len(generators)])
             for k in range(like.shape[0])]
    return torch.cat(draws).to(like.device, like.dtype)
