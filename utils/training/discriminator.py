"""A PatchGAN-style discriminator on SD latents, with spectral normalisation (it keeps the critic
Lipschitz, the usual companion of the hinge loss)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class LatentDiscriminator(nn.Module):
    """b×C×h×w latents -> b×1×(h/2^k)×(w/2^k) real/fake logits, k = len(channels) − 1.

    3×3 conv to channels[0], then one stride-2 4×4 conv per further width, LeakyReLU(0.2) between,
    and a 3×3 conv to one logit per patch.
    """

    def __init__(self, in_channels: int = 4, channels: Sequence[int] = (64, 128, 256, 512)):
        super().__init__()
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(in_channels, channels[0], 3, padding=1)),
                                   nn.LeakyReLU(0.2)]
        for prev, width in zip(channels, channels[1:]):
            layers += [spectral_norm(nn.Conv2d(prev, width, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        layers.append(spectral_norm(nn.Conv2d(channels[-1], 1, 3, padding=1)))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)
