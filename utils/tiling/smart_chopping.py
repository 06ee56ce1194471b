"""Complexity-driven patch grids and attention-weighted blending for utils.tiling.chopping.blend_patches.

Flat regions get little overlap (few patches: seams are invisible there), detailed regions up to
``max_overlap`` (more averaging where a seam would show).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from utils.postprocess.attention import attention_map
from utils.tiling.chopping import PatchGrid, WindowFn, gaussian_window
from utils.postprocess.complexity import complexity_map

ATTENTION_FLOOR = 0.7  # blend weight = Gaussian × (floor + (1 − floor)·attention)


def _axis_starts(length: int, pch: int, overlap: np.ndarray, cell: int) -> list[int]:
    """Starts along one axis; ``overlap[k]`` is the wanted overlap fraction for cell k (``cell`` pixels).

    Each next patch starts ``pch·(1 − overlap)`` after the previous one, the overlap being the mean over
    the cells the previous patch covers; the last patch ends at the border, so every pixel is covered.
    """
    starts = [0]
    while starts[-1] + pch < length:
        s = starts[-1]
        ov = float(overlap[s // cell: math.ceil((s + pch) / cell)].mean())
        stride = max(1, int(round(pch * (1.0 - ov))))
        starts.append(min(s + stride, length - pch))
    return starts


def smart_grid(image: torch.Tensor, pch: int, min_overlap: float = 0.25, max_overlap: float = 0.50) -> PatchGrid:
    """Patch grid for ``image`` (b×c×h×w, values in [0, 1]; input pixels) with adaptive overlap.

    Overlap per region = min_overlap + (max_overlap − min_overlap) × local complexity (mean over the
    batch), complexity measured on cells of pch/8 pixels. Rows of patches are placed along the image
    height from the row profile; inside each row band the columns are placed from that band's own
    profile, so a band through a flat area gets fewer patches. Patches are pch×pch (clipped to the
    image when it is smaller) and together cover every pixel.
    """
    if not 0.0 <= min_overlap <= max_overlap < 1.0:
        raise ValueError(f"need 0 <= min_overlap <= max_overlap < 1 (got {min_overlap}, {max_overlap})")
    h, w = image.shape[-2:]
    ph, pw = min(pch, h), min(pch, w)
    if h <= pch and w <= pch:
        return PatchGrid(((0, 0),), ph, pw)
    cell = max(pch // 8, 4)
    comp = complexity_map(image, cell).mean(0)[0].cpu().double().numpy()  # rows × cols of cells
    overlap = min_overlap + (max_overlap - min_overlap) * comp
    rows = _axis_starts(h, ph, overlap.mean(1), cell)
    starts = []
    for r in rows:
        band = overlap[r // cell: math.ceil((r + ph) / cell)].mean(0)
        starts.extend((r, c) for c in _axis_starts(w, pw, band, cell))
    return PatchGrid(tuple(starts), ph, pw)


def attention_window(method: str = "sobel", floor: float = ATTENTION_FLOOR) -> WindowFn:
    """A ``window=`` for blend_patches: Gaussian window × (floor + (1 − floor)·attention of the patch).

    Detailed parts of an output patch count more than its flat parts where patches overlap. The
    weights are strictly positive, so identical overlapping outputs blend back to themselves.
    """

    def window(res: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
        # float32: blend_patches accumulates in its own dtype, and MPS has no float64.
        gauss = gaussian_window(res.shape[-2], res.shape[-1]).to(res.device, torch.float32)
        att = attention_map(res, method).float()
        return gauss * (floor + (1.0 - floor) * att)

    return window


def plan_chopping(x: torch.Tensor, pch: int, fixed: PatchGrid, settings) -> tuple[PatchGrid, WindowFn | None]:
    """Grid and blending window for ``x`` (b×c×h×w) as every backend uses them: the backend's
    ``fixed`` grid with the Gaussian window, or, with ``settings.smart_chopping`` (a RunSettings),
    ``pch`` patches with complexity-driven overlap and attention-weighted blending."""
    if not settings.smart_chopping:
        return fixed, None
    return smart_grid(x, pch, settings.min_overlap, settings.max_overlap), attention_window()
