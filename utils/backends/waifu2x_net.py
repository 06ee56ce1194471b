"""waifu2x upconv_7 in PyTorch (spandrel has no waifu2x architecture).

Seven layers without padding: six 3×3 convolutions (LeakyReLU 0.1) trim 6 input pixels from each
side, then a 4×4 stride-2 transposed convolution (padding 3) doubles the size and trims one more, so
an h×w input gives a (2h-14)×(2w-14) output, as the packaged ncnn graph does.
"""
from __future__ import annotations

import torch
from torch import nn

CHANNELS = (3, 16, 32, 64, 128, 128, 256)
LRELU_SLOPE = 0.1


class UpConv7(nn.Module):
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in zip(CHANNELS, CHANNELS[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3), nn.LeakyReLU(LRELU_SLOPE)]
        self.body = nn.Sequential(*layers)
        self.upsample = nn.ConvTranspose2d(CHANNELS[-1], 3, 4, stride=2, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.body(x))
