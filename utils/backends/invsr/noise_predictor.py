"""InvSR's start-noise predictor: a timestep-aware copy of the SD VAE encoder built from diffusers blocks.

Parameter names follow the released checkpoint ``noise_predictor_sd_turbo_v5.pth`` (everything under
``encoder.``), so that checkpoint loads strictly.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.unets.unet_2d_blocks import UNetMidBlock2D, get_down_block
from torch import nn


class TimeAwareEncoder(nn.Module):
    """VAE-encoder layout whose resnets receive a timestep embedding."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        down_block_types: Sequence[str],
        block_out_channels: Sequence[int],
        layers_per_block: Sequence[int],
        norm_num_groups: int,
        act_fn: str,
        mid_block_add_attention: bool,
        resnet_time_scale_shift: str,
        temb_channels: int,
        freq_shift: int,
        flip_sin_to_cos: bool,
        attention_head_dim: int,
    ):
        super().__init__()
        time_dim = max(128, block_out_channels[0])
        self.time_proj = Timesteps(time_dim, flip_sin_to_cos, freq_shift)
        self.time_embedding = TimestepEmbedding(time_dim, temb_channels)
        self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
        self.down_blocks = nn.ModuleList()
        prev = block_out_channels[0]
        for i, (block_type, width) in enumerate(zip(down_block_types, block_out_channels)):
            self.down_blocks.append(get_down_block(
                block_type,
                num_layers=layers_per_block[i],
                in_channels=prev,
                out_channels=width,
                add_downsample=i < len(block_out_channels) - 1,
                resnet_eps=1e-6,
                downsample_padding=0,
                resnet_act_fn=act_fn,
                resnet_groups=norm_num_groups,
                attention_head_dim=attention_head_dim,
                resnet_time_scale_shift=resnet_time_scale_shift,
                temb_channels=temb_channels,
            ))
            prev = width
        self.mid_block = UNetMidBlock2D(
            in_channels=block_out_channels[-1],
            resnet_eps=1e-6,
            resnet_act_fn=act_fn,
            output_scale_factor=1,
            attention_head_dim=attention_head_dim,
            resnet_groups=norm_num_groups,
            add_attention=mid_block_add_attention,
            resnet_time_scale_shift=resnet_time_scale_shift,
            temb_channels=temb_channels,
        )
        self.conv_norm_out = nn.GroupNorm(norm_num_groups, block_out_channels[-1], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(block_out_channels[-1], out_channels, kernel_size=3, padding=1)

    def forward(self, sample: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(timesteps, device=sample.device).reshape(-1).expand(sample.shape[0])
        # The sinusoidal projection is always float32; the embedding MLP may run in half precision.
        emb = self.time_embedding(self.time_proj(t).to(self.time_embedding.linear_1.weight.dtype))
        h = self.conv_in(sample)
        for block in self.down_blocks:
            h, _ = block(h, emb)
        h = self.mid_block(h, emb)
        return self.conv_out(self.conv_act(self.conv_norm_out(h)))


class NoisePredictor(nn.Module):
    """Predicts the start noise map of InvSR from the low-resolution image.

    Takes exactly the reference's ``model_start.params`` keys; ``up_block_types`` and ``sample_size``
    are accepted for config compatibility and not used (the predictor has no decoder).
    """

    def __init__(
        self,
        in_channels: int = 3,
        down_block_types: Sequence[str] = ("AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types: Sequence[str] = ("AttnUpBlock2D", "AttnUpBlock2D"),
        block_out_channels: Sequence[int] = (256, 512),
        layers_per_block: int | Sequence[int] = (3, 3),
        act_fn: str = "silu",
        latent_channels: int = 4,
        norm_num_groups: int = 32,
        sample_size: int = 128,
        mid_block_add_attention: bool = True,
        resnet_time_scale_shift: str = "default",
        temb_channels: int = 512,
        attention_head_dim: int = 64,
        freq_shift: int = 0,
        flip_sin_to_cos: bool = True,
        double_z: bool = True,
    ):
        super().__init__()
        if len(down_block_types) != len(block_out_channels):
            raise ValueError("model_start.params: down_block_types and block_out_channels differ in length")
        if isinstance(layers_per_block, int):
            layers_per_block = [layers_per_block] * len(down_block_types)
        self.double_z = double_z
        self.encoder = TimeAwareEncoder(
            in_channels=in_channels,
            out_channels=2 * latent_channels if double_z else latent_channels,
            down_block_types=list(down_block_types),
            block_out_channels=list(block_out_channels),
            layers_per_block=list(layers_per_block),
            norm_num_groups=norm_num_groups,
            act_fn=act_fn,
            mid_block_add_attention=mid_block_add_attention,
            resnet_time_scale_shift=resnet_time_scale_shift,
            temb_channels=temb_channels,
            freq_shift=freq_shift,
            flip_sin_to_cos=flip_sin_to_cos,
            attention_head_dim=attention_head_dim,
        )

    @property
    def dtype(self) -> torch.dtype:
        """The dtype its inputs must have (the weights' dtype)."""
        return self.encoder.conv_in.weight.dtype

    def forward(self, image: torch.Tensor, timesteps: torch.Tensor, eps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Noise map for ``image`` (b×3×h×w in [0, 1]) at ``timesteps``.

        With ``double_z`` the output is a sample ``mean + std·eps`` of the predicted diagonal Gaussian
        (log-variance clamped to [-30, 20]); ``eps`` (standard normal, latent shape) must then be given.
        """
        h = self.encoder(image * 2 - 1, timesteps)
        if not self.double_z:
            return h
        if eps is None:
            raise ValueError("the noise predictor samples its Gaussian: pass eps")
        dist = DiagonalGaussianDistribution(h)
        return dist.mean + dist.std * eps.to(h.dtype)


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _strip_prefixes(key: str) -> str:
    # DataParallel/DDP add "module.", torch.compile adds "_orig_mod."; either order, possibly both.
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if key.startswith(prefix):
                key, changed = key[len(prefix):], True
    return key


def clean_state_dict(state: Mapping) -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}`` and drop ``module.`` / ``_orig_mod.`` prefixes."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    return {_strip_prefixes(k): v for k, v in state.items()}


def load_noise_predictor(model: NoisePredictor, ckpt: str | Path | Mapping) -> NoisePredictor:
    """Load a checkpoint (path or state dict) strictly: any missing or unexpected key is an error."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True) if isinstance(ckpt, (str, Path)) else ckpt
    state = clean_state_dict(state)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong_shape:
        def head(keys):
            return ", ".join(keys[:5]) + (f" … (+{len(keys) - 5})" if len(keys) > 5 else "")

        problems = [f"{name} ({len(keys)}): {head(keys)}" for name, keys in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if keys]
        raise RuntimeError(
            "noise predictor checkpoint does not match model_start.params — " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model
