"""The InvSR colour fix written out from its documented steps (../shared/docs/invsr-algorithm.md) with
torch primitives only, in float64, so that tests compare the project's colour fix with something it
did not compute: reference = the unpadded input upsampled with antialiased bicubic, NOT clamped; the
fix (ycbcr or wavelet) against it; then the clamp to [0, 1]."""
from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 RGB -> YCbCr rows (Y, Cb, Cr; the chroma offsets cancel in a Y/CbCr swap).
BT601 = torch.tensor([[0.299, 0.587, 0.114],
                      [-0.299 / 1.772, -0.587 / 1.772, 0.886 / 1.772],
                      [0.701 / 1.402, -0.587 / 1.402, -0.114 / 1.402]], dtype=torch.float64)
BINOMIAL_3X3 = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=torch.float64) / 16
WAVELET_LEVELS = 5


def color_reference(lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(lr.double(), size, mode="bicubic", align_corners=False, antialias=True)


def per_pixel(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``matrix`` applied to every pixel's channel vector of b×3×H×W ``x``."""
    return torch.einsum("ij,bjhw->bihw", matrix, x)


def ycbcr_fix(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The result's Y with the reference's Cb and Cr, back to RGB through the inverse matrix."""
    mixed = torch.cat((per_pixel(BT601, result)[:, :1], per_pixel(BT601, reference)[:, 1:]), 1)
    return per_pixel(torch.linalg.inv(BT601), mixed)


def wavelet_low(x: torch.Tensor) -> torch.Tensor:
    """The last of 5 cascaded 3×3 binomial blurs dilated by 2^i, replicate padding (one conv per level)."""
    kernel = BINOMIAL_3X3.expand(x.shape[1], 1, 3, 3)
    for i in range(WAVELET_LEVELS):
        radius = 2 ** i
        x = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=x.shape[1], dilation=radius)
    return x


def wavelet_fix(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """High frequencies of the result plus low frequencies of the reference."""
    return (result - wavelet_low(result)) + wavelet_low(reference)


FIXES = {"ycbcr": ycbcr_fix, "wavelet": wavelet_fix}


def fixed_by_hand(raw: torch.Tensor, lr: torch.Tensor, method: str) -> torch.Tensor:
    """``raw`` (the model's b×3×H×W result) colour-fixed against ``lr`` as documented, float64."""
    reference = color_reference(lr, tuple(raw.shape[-2:]))
    return FIXES[method](raw.double(), reference).clamp(0, 1)


def hard_edges(h: int, w: int) -> torch.Tensor:
    """1×3×h×w of saturated colour stripes and checks (0 or 1 per channel): bicubic overshoots at every edge."""
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack(((x // 3) % 2, (y // 3) % 2, ((x + y) // 4) % 2)).float()[None]
