"""LPIPS computed on SD latents: a VGG16 convolution trunk whose first layer takes the 4 latent
channels and which has no max-pooling (a 64×64 latent is already 8× smaller than its image).

Distance (per sample, ≥ 0, 0 for identical inputs): for each of the 5 VGG stages' last ReLU output f,
unit-normalise f over channels, square the difference of the two inputs' maps, weight the channels
with the stage's 1×1 "lin" layer and average over space; sum over stages.

Its trained weights are not shipped (nor downloadable offline). A weights file is a state dict of
this module, loaded strictly::

    features.{0,2,...,24}.weight/bias   the 13 convolutions (features.0.weight is 64×4×3×3)
    lins.{0..4}.weight                  1×C×1×1 non-negative channel weights, C = 64, 128, 256, 512, 512

(optionally wrapped in {"state_dict": ...} and/or prefixed module. / _orig_mod.). Without one,
:func:`build_latent_lpips` warns and returns None: the trainer then drops the LPIPS term, because a
randomly initialised trunk measures no perceptual difference and would only add an arbitrary
regulariser under the paper's name.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from utils.backends.invsr.noise_predictor import clean_state_dict

# Output channels of VGG16's convolutions, one tuple per stage (the stage's last ReLU is tapped).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
EPS = 1e-10


class LatentLPIPS(nn.Module):
    """b×C×h×w latents (two of them) -> b distances."""

    def __init__(self, in_channels: int = 4):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []  # index in `features` of each stage's last ReLU
        prev = in_channels
        for stage in VGG16_STAGES:
            for width in stage:
                layers += [nn.Conv2d(prev, width, kernel_size=3, padding=1), nn.ReLU(inplace=False)]
                prev = width
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(stage[-1], 1, kernel_size=1, bias=False) for stage in VGG16_STAGES)

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0])
        for lin, fx, fy in zip(self.lins, self.stage_features(x), self.stage_features(y)):
            nx = fx / (fx.norm(dim=1, keepdim=True) + EPS)
            ny = fy / (fy.norm(dim=1, keepdim=True) + EPS)
            total = total + lin((nx - ny) ** 2).mean(dim=(1, 2, 3))
        return total


def load_latent_lpips(path: str | Path, in_channels: int = 4) -> LatentLPIPS:
    """A frozen, eval-mode LatentLPIPS from a weights file (strict: every key, every shape)."""
    model = LatentLPIPS(in_channels)
    state = clean_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.load_state_dict(state, strict=True)
    if any((lin.weight < 0).any() for lin in model.lins):
        raise ValueError(f"{path}: LPIPS lin weights must be non-negative (a distance cannot reward differences)")
    return model.eval().requires_grad_(False)


def build_latent_lpips(path: Optional[str | Path], in_channels: int = 4) -> Optional[LatentLPIPS]:
    """The loss network from ``path``, or None (with a warning saying the term is off) when no file is given."""
    if path:
        return load_latent_lpips(path, in_channels)
    warnings.warn("latent LPIPS: no weights file (loss.lpips_weights_path is null), so its loss term is OFF "
                  "(weight 0). A trained latent-LPIPS state dict enables it; see utils/training/latent_lpips.py.",
                  UserWarning, stacklevel=2)
    return None
