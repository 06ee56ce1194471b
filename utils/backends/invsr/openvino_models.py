"""InvSR on OpenVINO: VAE encoder, VAE decoder, UNet and noise predictor converted once per weights
(utils.runtimes.ir_cache), and the two prompts' embeddings computed once by the torch text encoder and
kept beside the IRs, so later runs load no torch model at all.

Each part is wrapped in a small module whose outputs are tensors (diffusers returns dataclasses); its
spatial and batch dimensions stay dynamic, so every patch size and batch runs on one compiled model.
Conversion of SD-Turbo's parts takes about a minute each on 2 cores; each torch part is freed as soon
as it is converted.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from utils.backends.invsr.models import lr_multiple, load_predictor, prompt_embeddings, scheduler_config, sd_config, \
    vae_moments
from utils.backends.invsr.sampling import NEGATIVE_PROMPT, POSITIVE_PROMPT
from utils.backends.invsr.weights import InvSRWeights
from utils.checksums import cached_file_sha256
from utils.runtimes.ir_cache import CACHE_DIR, Conversion, load_compiled
from utils.runtimes.ov_core import CompiledModule

# The noise predictor's latent is the VAE's: 4 channels at 1/8 of the ×4 image, i.e. half the LR size.
LATENT_CHANNELS = 4


class _Encode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, image):
        return vae_moments(self.vae, image)


class _Decode(torch.nn.Module):
    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z):
        return self.vae.decode(z).sample


class _Denoise(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, x, t, embeds):
        return self.unet(x, t, encoder_hidden_states=embeds).sample


def _weight_files(folder: Path) -> tuple[Path, ...]:
    """The files a diffusers part is made from: its config and its weights."""
    return (folder / "config.json", *sorted(folder.glob("*.safetensors")), *sorted(folder.glob("*.bin")))


def conversions(weights: InvSRWeights, np_params: dict) -> dict[str, Conversion]:
    """name -> how to convert each part, with example inputs of a 16-px LR patch."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    sd = weights.sd_dir
    vae_files, unet_files = _weight_files(sd / "vae"), _weight_files(sd / "unet")
    embed_dim = sd_config(sd, "unet")["cross_attention_dim"]
    lr, t = torch.rand(1, 3, 16, 16), torch.tensor([199.0])
    latent = torch.randn(1, LATENT_CHANNELS, 8, 8)

    def vae():
        return AutoencoderKL.from_pretrained(str(sd), subfolder="vae", local_files_only=True).eval()

    def encoder():
        return _Encode(vae()), (lr.repeat(1, 1, 4, 4) * 2 - 1,), [(-1, 3, -1, -1)]

    def decoder():
        return _Decode(vae()), (latent,), [(-1, LATENT_CHANNELS, -1, -1)]

    def unet():
        model = UNet2DConditionModel.from_pretrained(str(sd), subfolder="unet", local_files_only=True).eval()
        return _Denoise(model), (latent, t, torch.randn(1, 77, embed_dim)), \
            [(-1, LATENT_CHANNELS, -1, -1), (-1,), (-1, 77, embed_dim)]

    def predictor():
        model = load_predictor(weights.noise_predictor, np_params).eval()
        return model, (lr, t, latent), [(-1, 3, -1, -1), (-1,), (-1, LATENT_CHANNELS, -1, -1)]

    params = json.dumps(np_params, sort_keys=True)
    return {
        "encoder": Conversion(f"InvSR VAE encoder ({sd.name})", vae_files, encoder),
        "decoder": Conversion(f"InvSR VAE decoder ({sd.name})", vae_files, decoder),
        "unet": Conversion(f"InvSR UNet ({sd.name})", unet_files, unet),
        "predictor": Conversion(f"InvSR noise predictor {hashlib.sha256(params.encode()).hexdigest()[:8]}",
                                (weights.noise_predictor,), predictor),
    }


def cached_prompt_embeds(sd_dir: Path, cache_dir: Path = CACHE_DIR,
                         texts: tuple[str, ...] = (POSITIVE_PROMPT, NEGATIVE_PROMPT)) -> dict[str, torch.Tensor]:
    """text -> 1×77×D float32 embedding, computed once per text encoder and tokenizer and kept in
    ``cache_dir`` (the text encoder never needs to load again)."""
    from safetensors.torch import load_file, save_file

    sources = [*_weight_files(sd_dir / "text_encoder"), *sorted((sd_dir / "tokenizer").glob("*"))]
    key = json.dumps({"sources": [cached_file_sha256(p) for p in sources], "texts": texts})
    path = cache_dir / f"prompt-embeds-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    if not path.is_file():
        from transformers import CLIPTextModel, CLIPTokenizer

        cache_dir.mkdir(parents=True, exist_ok=True)
        tokenizer = CLIPTokenizer.from_pretrained(str(sd_dir), subfolder="tokenizer", local_files_only=True)
        encoder = CLIPTextModel.from_pretrained(str(sd_dir), subfolder="text_encoder", local_files_only=True).eval()
        embeds = {f"prompt{i}": prompt_embeddings(tokenizer, encoder, text).float().contiguous()
                  for i, text in enumerate(texts)}
        del encoder
        tmp = path.with_suffix(".part")
        save_file(embeds, str(tmp))
        tmp.replace(path)
    stored = load_file(str(path))
    return {text: stored[f"prompt{i}"] for i, text in enumerate(texts)}


@dataclass
class OpenVINOModels:
    """The compiled parts, called by the sampler like :class:`~utils.backends.invsr.models.InvSRModels`
    (float32 tensors in and out; OpenVINO computes in ``precision`` inside)."""

    encoder: CompiledModule
    decoder: CompiledModule
    unet: CompiledModule
    predictor: CompiledModule
    prompts: dict[str, torch.Tensor]
    scheduler_config: dict
    scaling_factor: float
    mod_lq: int
    precision: str
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def prompt_embeds(self, text: str) -> torch.Tensor:
        return self.prompts[text]

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(image)

    def predict_noise(self, lr: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return self.predictor(lr, t, eps)

    def denoise(self, x: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t.reshape(-1).expand(x.shape[0]), embeds)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def load_openvino_models(weights: InvSRWeights, np_params: dict, precision: str,
                         notify: Optional[Callable[[str], None]] = None,
                         cache_dir: Path = CACHE_DIR) -> OpenVINOModels:
    """The four parts compiled for this CPU in ``precision``, converted first where the cache has none."""
    parts = {name: CompiledModule(load_compiled(conv, precision, cache_dir, notify))
             for name, conv in conversions(weights, np_params).items()}
    vae, unet = sd_config(weights.sd_dir, "vae"), sd_config(weights.sd_dir, "unet")
    return OpenVINOModels(**parts, prompts=cached_prompt_embeds(weights.sd_dir, cache_dir),
                          scheduler_config=scheduler_config(weights.sd_dir),
                          scaling_factor=vae.get("scaling_factor", 0.18215),
                          mod_lq=lr_multiple(len(vae["block_out_channels"]), len(unet["block_out_channels"])),
                          precision=precision)
