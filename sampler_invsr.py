"""InvSR ×4 super-resolution (Yue, Liao, Loy, CVPR 2025): one to five SD-Turbo steps started from a
predicted noise map. The algorithm and its constants follow ../shared/docs/invsr-algorithm.md.

Randomness (reproducible for a given ``seed`` on any device): for every image of a batch, the VAE
posterior sample uses a CPU ``torch.Generator`` seeded with ``seed`` and the noise predictor's sample
one seeded with ``seed + 1``; each draws one standard-normal latent-shaped tensor per patch in patch
order. So an image's result depends neither on the chopping batch size nor on the other images of
its batch. The generators restart at every call.
"""
from __future__ import annotations

import json
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from datapipe.image_io import list_images, read_image, write_image
from utils.chopping import PatchGrid, ProgressFn, blend_patches, pad_to_multiple, reflect_pad_to_patch
from utils.color_fix import METHODS as COLOR_FIX_METHODS
from utils.config import DEFAULT_TIMESTEPS
from utils.devices import cpu_threads, pick_device
from utils.invsr_weights import InvSRWeights, resolve_weights
from utils.noise_predictor import NoisePredictor, load_noise_predictor
from utils.pipeline import resize_alpha
from utils.smart_chopping import plan_chopping

POSITIVE_PROMPT = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, "
                   "hyper sharpness, perfect without deformations")
NEGATIVE_PROMPT = ("Low quality, blurring, jpeg artifacts, deformed, over-smooth, cartoon, noisy, "
                   "painting, drawing, sketch, oil painting")
SCALE = 4
MAX_STEPS = 5
# The reference switches to 256-pixel patches for inputs of at least this many LR pixels.
LARGE_INPUT_PIXELS = 512 ** 2
LARGE_PATCH = 256
_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
           "bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what} must be an integer (got {value!r})")
    return int(value)


def resolve_timesteps(cfg: DictConfig) -> list[int]:
    """The user-facing descending timesteps: ``timesteps`` if set, else the default list for ``num_steps``."""
    if cfg.get("timesteps") is None:
        steps = _int(cfg.get("num_steps", 1), "num_steps")
        if steps not in DEFAULT_TIMESTEPS:
            raise ValueError(f"num_steps must be between 1 and {MAX_STEPS} (got {steps})")
        return list(DEFAULT_TIMESTEPS[steps])
    raw = cfg.timesteps
    values = list(raw) if OmegaConf.is_list(raw) or isinstance(raw, (list, tuple)) else [raw]
    if not values:
        raise ValueError("timesteps must list at least one timestep")
    steps = [_int(v, "every timestep") for v in values]
    if any(not 1 <= t <= 999 for t in steps):
        raise ValueError(f"timesteps must lie in 1..999 (got {steps})")
    if any(a <= b for a, b in zip(steps, steps[1:])):
        raise ValueError(f"timesteps must be strictly descending, e.g. [250, 200, 150] (got {steps})")
    return steps


def color_fix_method(cfg: DictConfig) -> str:
    method = cfg.get("color_fix") or "none"  # the reference spells "no fix" as an empty string
    if method not in COLOR_FIX_METHODS:
        raise ValueError(f"color_fix must be one of {', '.join(COLOR_FIX_METHODS)} (got {method!r})")
    return method


def validate_config(cfg: DictConfig) -> list[int]:
    """Check every setting the sampler uses; returns the timesteps. Raises ValueError with the key name."""
    if _int(cfg.basesr.sf, "basesr.sf") != SCALE:
        raise ValueError(f"InvSR upscales by exactly ×{SCALE}; basesr.sf must be {SCALE} (got {cfg.basesr.sf})")
    pch = _int(cfg.basesr.chopping.pch_size, "basesr.chopping.pch_size")
    if pch <= 0 or pch % 8:
        raise ValueError(f"basesr.chopping.pch_size must be a positive multiple of 8 (got {pch})")
    if _int(cfg.basesr.chopping.extra_bs, "basesr.chopping.extra_bs") < 1:
        raise ValueError(f"basesr.chopping.extra_bs must be at least 1 (got {cfg.basesr.chopping.extra_bs})")
    for key in ("latent_tiled_size", "sample_tiled_size"):
        if _int(cfg[key], key) <= 0:
            raise ValueError(f"{key} must be positive (got {cfg[key]})")
    if isinstance(cfg.cfg_scale, bool) or not isinstance(cfg.cfg_scale, Real) or cfg.cfg_scale < 0:
        raise ValueError(f"cfg_scale must be a number ≥ 0 (got {cfg.cfg_scale!r})")
    _int(cfg.seed, "seed")
    color_fix_method(cfg)
    return resolve_timesteps(cfg)


def model_dtype(cfg: DictConfig, device: torch.device) -> torch.dtype:
    """``sd_pipe.params.torch_dtype`` on CUDA; float32 elsewhere (half precision is slow or unsafe there)."""
    if device.type != "cuda":
        return torch.float32
    name = str(cfg.sd_pipe.params.get("torch_dtype") or "float16").removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"sd_pipe.params.torch_dtype must be one of {', '.join(_DTYPES)} (got {name!r})")
    return _DTYPES[name]


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
        """1×77×D text-encoder last hidden state (padded to max length, no attention mask)."""
        if text not in self._prompts:
            ids = self.tokenizer(text, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="pt").input_ids
            self._prompts[text] = self.text_encoder(ids.to(self.device))[0].to(self.dtype)
        return self._prompts[text]


_MODELS: dict[tuple, InvSRModels] = {}
_MODELS_LOCK = threading.Lock()


def load_models(weights: InvSRWeights, np_params: dict, device: torch.device, dtype: torch.dtype,
                vae_tiling: Optional[tuple[int, int]] = None) -> InvSRModels:
    """Load (or reuse) the models for these weights/device/dtype. ``vae_tiling``: (latent, sample) tile
    sizes for diffusers' tiled VAE, or None. Keeps one model set: SD-Turbo is ~2.5 GB in float32."""
    key = (str(weights.sd_dir), str(weights.noise_predictor), json.dumps(np_params, sort_keys=True),
           str(device), str(dtype), vae_tiling)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS.clear()
            _MODELS[key] = _load(weights, np_params, device, dtype, vae_tiling)
        return _MODELS[key]


def _load(weights: InvSRWeights, np_params: dict, device, dtype, vae_tiling) -> InvSRModels:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = str(weights.sd_dir)
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet", torch_dtype=dtype, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", dtype=dtype, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer", local_files_only=True)
    scheduler_config = dict(EulerDiscreteScheduler.load_config(sd, subfolder="scheduler", local_files_only=True))
    if vae_tiling is not None:
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = vae_tiling
    # The predictor stays float32; on CUDA it runs under autocast like the reference.
    predictor = load_noise_predictor(NoisePredictor(**np_params), weights.noise_predictor)
    for m in (vae, unet, text_encoder, predictor):
        m.to(device).eval().requires_grad_(False)
    return InvSRModels(vae, unet, text_encoder, tokenizer, scheduler_config, predictor, device, dtype)


class InvSamplerSR:
    """InvSR sampler configured by an OmegaConf object (configs/sample-sd-turbo.yaml), never mutated.

    Construction validates the config, resolves the weights locally (raising
    :class:`utils.invsr_weights.WeightsNotFound` with instructions when they are missing) and loads the
    models once per process.
    """

    def __init__(self, configs: DictConfig, device: Optional[str] = None):
        self.configs = configs
        self.timesteps = validate_config(configs)
        self.color_fix = color_fix_method(configs)
        self.device = pick_device(device)
        self.dtype = model_dtype(configs, self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        tiling = ((int(configs.latent_tiled_size), int(configs.sample_tiled_size))
                  if configs.tiled_vae and self.device.type == "cuda" else None)
        np_params = OmegaConf.to_container(configs.model_start.params, resolve=True)
        self.weights = resolve_weights(configs)
        self.models = load_models(self.weights, np_params, self.device, self.dtype, tiling)

    # ---- whole images -------------------------------------------------------------------------------

    def patch_size(self, h: int, w: int) -> int:
        """LR patch size: the configured one, or 256 for large inputs (as the reference does)."""
        return LARGE_PATCH if h * w >= LARGE_INPUT_PIXELS else int(self.configs.basesr.chopping.pch_size)

    def upscale(self, im_lq: torch.Tensor, progress: Optional[ProgressFn] = None) -> torch.Tensor:
        """b×3×h×w in [0, 1] -> b×3×4h×4w float32 CPU tensor in [0, 1] (colour-fixed per the config)."""
        x = _check_image(im_lq).to(self.device, torch.float32)
        b, _, h, w = x.shape
        pch = self.patch_size(h, w)
        padded, top, left = reflect_pad_to_patch(x, pch)
        if padded.shape[-2:] != (pch, pch):
            padded = pad_to_multiple(padded, self.models.mod_lq)
        fixed = PatchGrid.regular(padded.shape[-2], padded.shape[-1], pch, pch // 2)
        grid, window = plan_chopping(padded, pch, fixed, self.configs)
        seed = int(self.configs.seed)
        gen_vae = [torch.Generator().manual_seed(seed) for _ in range(b)]
        gen_noise = [torch.Generator().manual_seed(seed + 1) for _ in range(b)]
        with torch.inference_mode():
            out = blend_patches(padded, lambda p: self.sample_patches(p, gen_vae, gen_noise), grid, SCALE,
                                batch_size=int(self.configs.basesr.chopping.extra_bs), window=window,
                                progress=progress)
            out = out[:, :, top * SCALE:(top + h) * SCALE, left * SCALE:(left + w) * SCALE].float().cpu()
            if self.color_fix != "none":
                from utils.color_fix import color_fix

                # Colours come from the unpadded input; antialiased bicubic as in the reference.
                reference = F.interpolate(im_lq.detach().float().cpu(), size=out.shape[-2:], mode="bicubic",
                                          align_corners=False, antialias=True)
                out = color_fix(out, reference, self.color_fix)
        return out.clamp(0.0, 1.0)  # outside inference mode: callers get an ordinary tensor

    def sample_func(self, im_lq: torch.Tensor) -> np.ndarray:
        """b×3×h×w tensor in [0, 1] -> b×4h×4w×3 float32 numpy array in [0, 1]."""
        return self.upscale(im_lq).permute(0, 2, 3, 1).numpy()

    def inference(self, in_path, out_path, bs: int = 1) -> list[Path]:
        """Upscale one image file or every image in a folder into ``out_path``/<stem>.png.

        Consecutive same-size images are batched ``bs`` at a time. Returns the written paths.
        """

        if _int(bs, "bs") < 1:
            raise ValueError(f"bs must be at least 1 (got {bs})")
        in_path, out_path = Path(in_path), Path(out_path)
        paths = list_images(in_path) if in_path.is_dir() else [in_path]
        if not paths:
            raise FileNotFoundError(f"no images found in {in_path}")
        out_path.mkdir(parents=True, exist_ok=True)
        written, batch = [], []
        for path in paths:
            image = read_image(path)
            if batch and (len(batch) == bs or batch[0][1].rgb.shape != image.rgb.shape):
                written += self._write_batch(batch, out_path)
                batch = []
            batch.append((path, image))
        return written + self._write_batch(batch, out_path)

    def _write_batch(self, batch, out_path: Path) -> list[Path]:
        lr = torch.stack([torch.from_numpy(img.rgb).permute(2, 0, 1) for _, img in batch])
        results = self.sample_func(lr)
        written = []
        for (path, img), rgb in zip(batch, results):
            alpha = resize_alpha(img.alpha, rgb.shape[:2])
            written.append(write_image(out_path / f"{path.stem}.png", img.with_pixels(rgb, alpha)))
        return written

    # ---- one batch of patches -----------------------------------------------------------------------

    def sample_patches(self, lr: torch.Tensor, gen_vae: list[torch.Generator],
                       gen_noise: list[torch.Generator]) -> torch.Tensor:
        """n×3×p×p LR patches in [0, 1] -> n×3×4p×4p float32 in [0, 1] (one InvSR run, no padding).

        Row k draws its noise from generator ``k % len(generators)``: blend_patches stacks the patches
        patch-major, one row per image of the batch.
        """
        from diffusers import EulerDiscreteScheduler

        m = self.models
        n, _, h, w = lr.shape
        lr = lr.to(m.device, m.dtype)
        up = F.interpolate(lr, size=(h * SCALE, w * SCALE), mode="bicubic", align_corners=False) * 2 - 1
        scheduler = EulerDiscreteScheduler.from_config(m.scheduler_config)
        # The scheduler (and every model) runs at T − 1: timestep 200 means training index 199.
        scheduler.set_timesteps(timesteps=[t - 1 for t in self.timesteps], device=m.device)
        t_start = scheduler.timesteps[:1].repeat(n)

        posterior = m.vae.encode(up).latent_dist
        z0 = (posterior.mean + posterior.std * _randn(gen_vae, posterior.mean)) * m.vae.config.scaling_factor
        autocast = torch.autocast("cuda", dtype=m.dtype) if m.device.type == "cuda" else nullcontext()
        with autocast:
            noise = m.noise_predictor(lr.float(), t_start, _randn(gen_noise, z0).float())
        x = scheduler.add_noise(z0, noise.to(z0.dtype), t_start)

        guidance = float(self.configs.cfg_scale)
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


def _randn(generators: list[torch.Generator], like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the CPU one row at a time, row k from
    ``generators[k % len(generators)]`` (so batching and the device do not change the values)."""
    draws = [torch.randn((1, *like.shape[1:]), generator=generators[k % len(generators)])
             for k in range(like.shape[0])]
    return torch.cat(draws).to(like.device, like.dtype)


def _check_image(im: torch.Tensor) -> torch.Tensor:
    if not isinstance(im, torch.Tensor):
        raise ValueError(f"expected a torch tensor b×3×h×w in [0, 1], got {type(im).__name__}")
    if im.ndim != 4 or im.shape[1] != 3:
        raise ValueError(f"expected an RGB batch b×3×h×w, got shape {tuple(im.shape)}"
                         + (" (convert grayscale/RGBA images to RGB first)" if im.ndim == 4 else ""))
    if not im.is_floating_point():
        raise ValueError(f"expected float pixel values in [0, 1], got dtype {im.dtype}")
    if im.shape[0] == 0 or min(im.shape[-2:]) < 2:
        raise ValueError(f"image too small: {im.shape[-2]}×{im.shape[-1]} (needs at least 2×2 pixels)")
    return im
