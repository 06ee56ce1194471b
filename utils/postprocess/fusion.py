"""Attention-guided fusion of several results for the same output image.

Candidates, by convention: ``candidates[0]`` is the detailed result (e.g. Real-ESRGAN or InvSR), the
rest are conservative alternatives of the same size (e.g. the bicubic upsampling of the input, or a
colour-fixed variant). The detailed result is kept where it has structure (its attention map is
high: edges, textures the model is confident about) and the conservative ones take over in flat
areas, where a generative model tends to paint noise, blotches or false texture.
"""
from __future__ import annotations

from typing import Sequence

import torch

from utils.postprocess.attention import attention_map

METHODS = ("weighted", "max")


def fuse(
    candidates: Sequence[torch.Tensor], method: str = "weighted", attention: str = "sobel", sigma: float = 2.0
) -> torch.Tensor:
    """Fuse b×3×H×W candidates (same shape, values in [0, 1]) into one b×3×H×W image.

    a = attention_map(candidates[0], attention, sigma) ∈ [0, 1]; f = mean of candidates[1:].
    'weighted': ``a·candidates[0] + (1 − a)·f`` (soft); 'max': per pixel whichever side has the larger
    weight, i.e. candidates[0] where a ≥ 0.5 else f (hard). One candidate is returned as is. Output
    has the first candidate's device and dtype; identical candidates give that image back.
    """
    if method not in METHODS:
        raise ValueError(f"unknown fusion method {method!r} (expected one of {', '.join(METHODS)})")
    if not candidates:
        raise ValueError("fusion needs at least one candidate")
    first = candidates[0]
    if any(c.shape != first.shape for c in candidates):
        raise ValueError(f"candidate shapes differ: {[tuple(c.shape) for c in candidates]}")
    if len(candidates) == 1:
        return first
    work = torch.float32 if first.dtype in (torch.float16, torch.bfloat16) else first.dtype
    detail = first.to(work)
    fallback = torch.stack([c.to(first.device, work) for c in candidates[1:]]).mean(0)
    a = attention_map(detail, attention, sigma)
    if method == "weighted":
        out = torch.lerp(fallback, detail, a)
    else:
        out = torch.where(a >= 0.5, detail, fallback)
    return out.to(first.dtype)
