"""How much detail an image (or each region of it) has, as a score in [0, 1].

Four luma features, each divided by its expected value on i.i.d. uniform RGB noise and clipped to
[0, 1], then mixed 0.25 / 0.30 / 0.25 / 0.20 (the seed's weights):
global variance, mean Sobel gradient magnitude, mean 7×7 local variance, histogram entropy.
A flat image scores 0 on every feature; uniform noise scores ≈ 1.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from utils.postprocess.attention import local_variance, luma, sobel_magnitude

WEIGHTS = (0.25, 0.30, 0.25, 0.20)
# Luma of i.i.d. uniform RGB noise: variance (0.299² + 0.587² + 0.114²) / 12 ≈ 0.0373; mean Sobel/8
# magnitude ≈ √(12·0.0373/64)·√(π/2) ≈ 0.105; 7×7 local variance ≈ 48/49 of the variance.
NOISE_VARIANCE = 0.0373
NOISE_GRADIENT = 0.105
NOISE_LOCAL_VARIANCE = 0.0365
GLOBAL_BINS = 256  # entropy normalised by log2(bins)
REGION_BINS = 16   # fewer bins for small regions, whose pixel count could not fill 256


def _mix(variance: torch.Tensor, gradient: torch.Tensor, local_var: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
    feats = (
        variance / NOISE_VARIANCE,
        gradient / NOISE_GRADIENT,
        local_var / NOISE_LOCAL_VARIANCE,
        entropy,
    )
    return sum(w * f.clamp(0.0, 1.0) for w, f in zip(WEIGHTS, feats))


def _bin_index(gray: torch.Tensor, bins: int) -> torch.Tensor:
    return (gray.clamp(0.0, 1.0) * bins).long().clamp_max(bins - 1)


def image_complexity(img: torch.Tensor) -> torch.Tensor:
    """b×3×H×W (or b×1) in [0, 1] -> complexity per image, shape (b,), values in [0, 1], float32+."""
    gray = luma(img)
    b = gray.shape[0]
    flat = gray.flatten(1)
    idx = _bin_index(flat, GLOBAL_BINS)
    counts = torch.zeros(b, GLOBAL_BINS, device=gray.device, dtype=gray.dtype).scatter_add_(1, idx, torch.ones_like(flat))
    p = counts / flat.shape[1]
    entropy = -(p * torch.log2(p.clamp_min(1e-12))).sum(1) / math.log2(GLOBAL_BINS)
    return _mix(
        flat.var(1, unbiased=False),
        sobel_magnitude(gray).flatten(1).mean(1),
        local_variance(gray).flatten(1).mean(1),
        entropy,
    )


def complexity_map(img: torch.Tensor, window: int, stride: int | None = None) -> torch.Tensor:
    """Complexity of every ``window``×``window`` region: b×1×rows×cols in [0, 1] (float32+).

    Regions start every ``stride`` pixels (default ``window``); the last row/column of regions is
    partial so every pixel belongs to one (rows = ceil((H − window) / stride) + 1, at least 1).
    Gradients and local variance are computed on the whole image first, so region borders see their
    real neighbours; everything is average pooling, one pass per histogram bin.
    """
    gray = luma(img)
    stride = stride or window
    k = (min(window, gray.shape[-2]), min(window, gray.shape[-1]))

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, k, stride=stride, ceil_mode=True)

    mean = pool(gray)
    variance = (pool(gray * gray) - mean * mean).clamp_min(0.0)
    idx = _bin_index(gray, REGION_BINS)
    entropy = torch.zeros_like(mean)
    for i in range(REGION_BINS):
        p = pool((idx == i).to(gray.dtype))
        entropy -= p * torch.log2(p.clamp_min(1e-12))
    return _mix(variance, pool(sobel_magnitude(gray)), pool(local_variance(gray)), entropy / math.log2(REGION_BINS))
