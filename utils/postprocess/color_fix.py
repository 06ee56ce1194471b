"""Color correction of a super-resolved image against reference colours.

All functions take ``result`` (RGB in [0, 1]) and ``reference`` as b×3×H×W tensors of the same shape
(the reference is normally the unpadded input upsampled to the output size with antialiased bicubic,
unclamped, so it may overshoot [0, 1] at edges) and return a b×3×H×W tensor on ``result``'s device and
dtype, clamped to [0, 1] only at the end. Arithmetic runs in at least float32 so half-precision
inputs do not lose the small low-frequency differences.

YCbCr is ITU-R BT.601 full range (JPEG/JFIF convention) on [0, 1] values:
``Y = 0.299 R + 0.587 G + 0.114 B``, ``Cb = 0.5 + (B − Y) / 1.772``, ``Cr = 0.5 + (R − Y) / 1.402``.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage.exposure import match_histograms

from utils.config import COLOR_FIX_METHODS as METHODS

_KR, _KB = 0.299, 0.114
_KG = 1.0 - _KR - _KB
# Share of the histogram-matched image in histogram_color_fix: a full match copies the bicubic
# reference's tonal distribution, which is blurrier than the result's, so part of the input is kept.
HISTOGRAM_BLEND = 0.7
# Weights of the ycbcr, wavelet and histogram candidates in the 'adaptive' hybrid (the seed's mix).
HYBRID_WEIGHTS = (0.3, 0.3, 0.4)


def _work(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check(result: torch.Tensor, reference: torch.Tensor) -> None:
    if result.ndim != 4 or result.shape[1] != 3:
        raise ValueError(f"expected a b×3×H×W image, got shape {tuple(result.shape)}")
    if reference.shape != result.shape:
        raise ValueError(f"reference shape {tuple(reference.shape)} != result shape {tuple(result.shape)}")


def _finish(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x.clamp(0.0, 1.0).to(device=like.device, dtype=like.dtype)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """b×3×H×W RGB in [0,1] -> BT.601 full-range YCbCr, chroma centred on 0.5 (same shape)."""
    r, g, b = x.unbind(1)
    y = _KR * r + _KG * g + _KB * b
    cb = 0.5 + (b - y) / (2.0 * (1.0 - _KB))
    cr = 0.5 + (r - y) / (2.0 * (1.0 - _KR))
    return torch.stack((y, cb, cr), 1)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr` (unclamped)."""
    y, cb, cr = x.unbind(1)
    r = y + 2.0 * (1.0 - _KR) * (cr - 0.5)
    b = y + 2.0 * (1.0 - _KB) * (cb - 0.5)
    g = (y - _KR * r - _KB * b) / _KG
    return torch.stack((r, g, b), 1)


def ycbcr_color_fix(result: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Keep the result's luma (Y), take the chroma (Cb, Cr) from the reference."""
    _check(result, reference)
    res, ref = rgb_to_ycbcr(_work(result)), rgb_to_ycbcr(_work(reference).to(result.device))
    return _finish(ycbcr_to_rgb(torch.cat((res[:, :1], ref[:, 1:]), 1)), result)


def _binomial_blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    """3×3 binomial blur ([1,2,1]ᵀ[1,2,1]/16) with taps ``radius`` apart, replicate padding.

    The kernel is separable, and three shifted slices per axis are several times faster on the CPU
    than a depthwise dilated convolution.
    """
    x = F.pad(x, (radius,) * 4, mode="replicate")
    for dim in (-2, -1):
        n = x.shape[dim] - 2 * radius
        x = (x.narrow(dim, 0, n) + 2 * x.narrow(dim, radius, n) + x.narrow(dim, 2 * radius, n)) / 4
    return x


def _dilated_binomial(radius: int, dtype: np.dtype) -> np.ndarray:
    """The 1-D kernel [1, 2, 1]/4 with its taps ``radius`` apart (zeros between)."""
    k = np.zeros(2 * radius + 1, dtype)
    k[0] = k[-1] = 0.25
    k[radius] = 0.5
    return k


def _blur_cascade(x: torch.Tensor, levels: int) -> torch.Tensor:
    """``levels`` cascaded binomial blurs of radius 1, 2, 4, … (b×C×H×W, same shape and dtype).

    On the CPU OpenCV's separable filter does it (channels-last, replicate border): 5× faster than the
    shifted slices at a 1024² ×4 output, which the colour fix of every run pays; elsewhere, and where
    gradients must flow, the slices.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64) or x.requires_grad:
        for i in range(levels):
            x = _binomial_blur(x, 2 ** i)
        return x
    dtype = np.float32 if x.dtype == torch.float32 else np.float64
    images = []
    for img in x:
        a = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
        for i in range(levels):
            k = _dilated_binomial(2 ** i, dtype)
            a = cv2.sepFilter2D(a, -1, k, k, borderType=cv2.BORDER_REPLICATE)
        images.append(torch.from_numpy(a.reshape(*a.shape[:2], -1)).permute(2, 0, 1))
    return torch.stack(images)


def wavelet_decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) with ``high + low == x``: low is ``levels`` cascaded blurs of radius 2^i (the sum of
    the per-level detail bands telescopes to ``x − low``)."""
    low = _blur_cascade(x, levels)
    return x - low, low


def wavelet_color_fix(result: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """High frequencies of the result + low frequencies (the last blur level) of the reference.

    The blur cascade is linear (replicate padding included), so ``high(res) + low(ref)`` equals
    ``res + low(ref − res)``: one decomposition instead of two.
    """
    _check(result, reference)
    res = _work(result)
    _, low = wavelet_decompose(_work(reference).to(result.device) - res, levels)
    return _finish(res + low, result)


def histogram_color_fix(
    result: torch.Tensor, reference: torch.Tensor, blend: float = HISTOGRAM_BLEND
) -> torch.Tensor:
    """Per-channel histogram matching to the reference, mixed ``blend·matched + (1−blend)·result``.

    ``blend`` = 1 gives the pure match (each channel takes the reference's value distribution);
    the default 0.7 keeps 30 % of the result so its contrast is not fully replaced by the blurrier
    reference's. Runs on the CPU in float64 (scikit-image), one image of the batch at a time.
    """
    _check(result, reference)
    res = result.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    ref = reference.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    matched = np.stack([match_histograms(a, b, channel_axis=-1) for a, b in zip(res, ref)])
    mixed = torch.from_numpy(blend * matched + (1.0 - blend) * res).permute(0, 3, 1, 2)
    return _finish(mixed, result)


def _ycbcr_mse(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared error in YCbCr, shape (b,)."""
    return (rgb_to_ycbcr(x) - rgb_to_ycbcr(reference)).pow(2).mean(dim=(1, 2, 3))


def hybrid_color_fix(result: torch.Tensor, reference: torch.Tensor, mode: str = "adaptive") -> torch.Tensor:
    """Combine the ycbcr, wavelet and histogram fixes.

    'adaptive': the fixed mix 0.3·ycbcr + 0.3·wavelet + 0.4·histogram.
    'best': per image, the candidate with the smallest YCbCr MSE to the reference.
    """
    _check(result, reference)
    ref = _work(reference).to(result.device)
    cands = torch.stack([_work(f(result, reference)) for f in (ycbcr_color_fix, wavelet_color_fix, histogram_color_fix)])
    if mode == "adaptive":
        w = torch.tensor(HYBRID_WEIGHTS, device=cands.device, dtype=cands.dtype).view(-1, 1, 1, 1, 1)
        return _finish((w * cands).sum(0), result)
    if mode == "best":
        errors = torch.stack([_ycbcr_mse(c, ref) for c in cands])  # candidates × b
        pick = errors.argmin(0)
        return _finish(cands[pick, torch.arange(result.shape[0], device=pick.device)], result)
    raise ValueError(f"unknown hybrid mode {mode!r} (expected 'adaptive' or 'best')")


def color_fix(result: torch.Tensor, reference: torch.Tensor, method: str = "wavelet") -> torch.Tensor:
    """Dispatch on ``method`` in :data:`METHODS`; 'none' only clamps (same shape/device/dtype)."""
    if method == "none":
        _check(result, reference)
        return result.clamp(0.0, 1.0)
    if method == "ycbcr":
        return ycbcr_color_fix(result, reference)
    if method == "wavelet":
        return wavelet_color_fix(result, reference)
    if method == "histogram":
        return histogram_color_fix(result, reference)
    if method == "hybrid":
        return hybrid_color_fix(result, reference)
    raise ValueError(f"unknown color fix {method!r} (expected one of {', '.join(METHODS)})")
