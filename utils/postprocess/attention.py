"""Attention (detail) maps and the small filters they are built from.

Images are b×c×H×W float tensors (c = 3 RGB or 1 grey, values nominally in [0, 1]) on any device;
filters run in at least float32 and return the working dtype unless stated otherwise. Borders use
replicate padding so that maps have no artificial edges at the image boundary.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (0.299, 0.587, 0.114)  # BT.601, as in utils.postprocess.color_fix
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))


def _work(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def luma(x: torch.Tensor) -> torch.Tensor:
    """b×3×H×W RGB (or b×1×H×W grey) -> b×1×H×W BT.601 luma in the working dtype."""
    x = _work(x)
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[1]}")
    w = torch.tensor(_LUMA, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def sobel_magnitude(gray: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude of b×1×H×W with Sobel kernels divided by 8 (a ramp of slope s gives s)."""
    gray = _work(gray)
    kx = torch.tensor(_SOBEL_X, device=gray.device, dtype=gray.dtype) / 8.0
    kernels = torch.stack((kx, kx.T)).unsqueeze(1)
    g = F.conv2d(F.pad(gray, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(1, keepdim=True).sqrt()


def local_variance(gray: torch.Tensor, size: int = 7) -> torch.Tensor:
    """Variance of b×1×H×W over a ``size``×``size`` neighbourhood of every pixel (odd size)."""
    gray = _work(gray)
    p = size // 2
    padded = F.pad(gray, (p, p, p, p), mode="replicate")
    mean = F.avg_pool2d(padded, size, stride=1)
    return (F.avg_pool2d(padded * padded, size, stride=1) - mean * mean).clamp_min(0.0)


def gaussian_kernel_1d(sigma: float, size: int | None = None, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised 1-D Gaussian; default size covers ±3σ."""
    size = size or 2 * math.ceil(3 * sigma) + 1
    t = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, size: int | None = None) -> torch.Tensor:
    """Separable per-channel Gaussian blur of b×c×H×W, replicate padding, same spatial size."""
    x = _work(x)
    k = gaussian_kernel_1d(sigma, size, x.device, x.dtype)
    p, c = k.numel() // 2, x.shape[1]
    x = F.pad(x, (p, p, p, p), mode="replicate")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def minmax_normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each image of b×1×H×W to [0, 1]; a constant image maps to zeros."""
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def attention_map(img: torch.Tensor, method: str = "sobel", sigma: float = 2.0) -> torch.Tensor:
    """Where the image has detail: b×3×H×W (or b×1) -> b×1×H×W in [0, 1], float32 or wider.

    ``method`` 'sobel' = luma gradient magnitude, 'variance' = 7×7 local luma variance. The map is
    smoothed with a Gaussian of ``sigma`` and then min-max normalised per image (normalising last keeps
    the full [0, 1] range after smoothing); a flat image gives all zeros.
    """
    gray = luma(img)
    if method == "sobel":
        raw = sobel_magnitude(gray)
    elif method == "variance":
        raw = local_variance(gray)
    else:
        raise ValueError(f"unknown attention method {method!r} (expected 'sobel' or 'variance')")
    if sigma > 0:
        raw = gaussian_blur(raw, sigma)
    return minmax_normalize(raw)
