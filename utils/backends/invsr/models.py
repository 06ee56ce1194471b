"""Loading InvSR's torch models: SD-Turbo's VAE, UNet and text encoder (diffusers/transformers, local
files only) and the noise predictor, as one :class:`InvSRModels` the sampler calls stage by stage."""
from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from omegaconf import DictConfig, OmegaConf

from utils.backends.invsr.placement import place_models
from utils.backends.invsr.weights import InvSRWeights
from utils.config import SCALE

if TYPE_CHECKING:
    from utils.backends.invsr.noise_predictor import NoisePredictor


def vae_tiling(cfg: DictConfig, device: torch.device) -> Optional[tuple[int, int]]:
    """(latent, sample) tile sizes for diffusers' tiled VAE on CUDA, else None."""
    if cfg.tiled_vae and device.type == "cuda":
        return int(cfg.latent_tiled_size), int(cfg.sample_tiled_size)
    return None


def predictor_params(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.model_start.params, resolve=True)


def lr_multiple(vae_blocks: int, unet_blocks: int) -> int:
    """LR padding multiple of a VAE and UNet with that many resolution levels: (VAE factor / sf) × UNet
    down factor."""
    return 2 ** (vae_blocks - 1) // SCALE * 2 ** (unet_blocks - 1)


def sd_config(sd_dir: Path, part: str) -> dict:
    """``sd_dir/part/config.json`` (architecture facts without loading the model)."""
    return json.loads((Path(sd_dir) / part / "config.json").read_text())


@dataclass
class InvSRModels:
    """Loaded SD-Turbo components and noise predictor on one device, plus the cached prompt embeddings.

    The sampler calls the stages (:meth:`encode`, :meth:`predict_noise`, :meth:`denoise`,
    :meth:`decode`); the OpenVINO models offer the same ones.
    """

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
        return lr_multiple(len(self.vae.config.block_out_channels), len(self.unet.config.block_out_channels))

    @property
    def scaling_factor(self) -> float:
        return self.vae.config.scaling_factor

    def prompt_embeds(self, text: str) -> torch.Tensor:
        """1×77×D text-encoder last hidden state (padded to max length, no attention mask); computed
        once per loaded model."""
        if text not in self._prompts:
            self._prompts[text] = prompt_embeddings(self.tokenizer, self.text_encoder, text).to(self.dtype)
        return self._prompts[text]

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return vae_moments(self.vae, image)

    def predict_noise(self, lr: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        # On CUDA the predictor is float32 under autocast, like the reference.
        autocast = torch.autocast("cuda", dtype=self.dtype) if self.device.type == "cuda" else nullcontext()
        dtype = self.noise_predictor.dtype
        with autocast:
            return self.noise_predictor(lr.to(dtype), t, eps.to(dtype))

    def denoise(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=embeds).sample

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


def vae_moments(vae: torch.nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of the VAE posterior of ``image`` (b×3×H×W in [-1, 1])."""
    posterior = vae.encode(image).latent_dist
    return posterior.mean, posterior.std


def prompt_embeddings(tokenizer, text_encoder: torch.nn.Module, text: str) -> torch.Tensor:
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    with torch.inference_mode():
        return text_encoder(ids.to(text_encoder.device))[0]


def load_models(weights: InvSRWeights, np_params: dict, device: torch.device, dtype: torch.dtype,
                tiling: Optional[tuple[int, int]] = None) -> InvSRModels:
    """Load SD-Turbo's VAE, UNet and text encoder (diffusers/transformers, local files only) and the
    noise predictor. ``tiling``: (latent, sample) tile sizes for diffusers' tiled VAE, or None."""
    return assemble_models(weights.sd_dir, load_predictor(weights.noise_predictor, np_params), device, dtype, tiling)


def load_predictor(ckpt: Path, np_params: dict) -> "NoisePredictor":
    # Imported here: diffusers takes seconds to import, which no other backend (nor --help) should pay.
    from utils.backends.invsr.noise_predictor import NoisePredictor, load_noise_predictor

    return load_noise_predictor(NoisePredictor(**np_params), ckpt)


def assemble_models(sd_dir: Path, predictor: NoisePredictor, device: torch.device, dtype: torch.dtype,
                    tiling: Optional[tuple[int, int]] = None) -> InvSRModels:
    """SD-Turbo from ``sd_dir`` (local files only) around an already built ``predictor``, every model
    frozen in eval mode on ``device`` (a trainer re-enables the predictor's gradients)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    sd = str(sd_dir)
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae", torch_dtype=dtype, local_files_only=True)
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet", torch_dtype=dtype, local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder", dtype=dtype, local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer", local_files_only=True)
    if tiling is not None:
        vae.enable_tiling()
        vae.tile_latent_min_size, vae.tile_sample_min_size = tiling
    place_models(vae, unet, text_encoder, predictor, device, dtype)
    return InvSRModels(vae, unet, text_encoder, tokenizer, scheduler_config(sd_dir), predictor, device, dtype)


def scheduler_config(sd_dir: Path) -> dict:
    from diffusers import EulerDiscreteScheduler

    return dict(EulerDiscreteScheduler.load_config(str(sd_dir), subfolder="scheduler", local_files_only=True))
