"""Split an image into overlapping patches, upscale each, and blend the results back.

Every backend goes through here so that large images never have to fit in memory at once.
Shapes: input ``b×c×h×w``; the patch function maps ``n×c×ph×pw`` to ``n×c'×(ph·sf)×(pw·sf)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PatchFn = Callable[[torch.Tensor], torch.Tensor]
# Called after every finished patch with (done, total); may raise to cancel between patches.
ProgressFn = Callable[[int, int], None]
# Blending weight for one output patch: (output patch n×c×H×W, its patch indices) -> weights n×1×H×W or H×W.
WindowFn = Callable[[torch.Tensor, Sequence[int]], torch.Tensor]


def grid_starts(length: int, pch: int, stride: int) -> list[int]:
    """Patch starts along one axis: every ``stride`` pixels, the last one moved back to end at the border."""
    if pch <= 0 or stride <= 0:
        raise ValueError(f"patch size and stride must be positive (got {pch}, {stride})")
    if length <= pch:
        return [0]
    starts = [min(s, length - pch) for s in range(0, length, stride)]
    return list(dict.fromkeys(starts))


@dataclass(frozen=True)
class PatchGrid:
    """Where the patches of one image lie: top-left corners and a common patch size (input pixels)."""

    starts: tuple[tuple[int, int], ...]
    height: int
    width: int

    @classmethod
    def regular(cls, h: int, w: int, pch: int, stride: int) -> "PatchGrid":
        """Square ``pch`` patches every ``stride`` pixels (the InvSR reference grid)."""
        rows, cols = grid_starts(h, pch, stride), grid_starts(w, pch, stride)
        return cls(tuple((r, c) for r in rows for c in cols), min(pch, h), min(pch, w))

    @classmethod
    def balanced(cls, h: int, w: int, max_tile: int, overlap: int, align: int = 1) -> "PatchGrid":
        """The fewest tiles of at most ``max_tile`` that overlap by at least ``overlap``, shrunk to share
        the image evenly: 512 px with 256-px tiles gives 3 tiles of 192, not tiles at 0, 224 and 256
        (which would compute 2.25× the pixels in 2-D instead of 1.27×).

        ``align`` > 1: tile sizes and starts are multiples of it (tiles may exceed ``max_tile`` by less
        than ``align``), for sides that are multiples of it."""
        (th, rows), (tw, cols) = (_balanced_axis(h, max_tile, overlap, align),
                                  _balanced_axis(w, max_tile, overlap, align))
        return cls(tuple((r, c) for r in rows for c in cols), th, tw)

    def __len__(self) -> int:
        return len(self.starts)


def _balanced_axis(length: int, max_tile: int, overlap: int, align: int = 1) -> tuple[int, list[int]]:
    if not 0 <= overlap < max_tile:
        raise ValueError(f"tile overlap must be in [0, tile size) (got {overlap} for tiles of {max_tile})")
    if length <= max_tile:
        return length, [0]
    count = math.ceil((length - overlap) / (max_tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    if align == 1:
        return size, grid_starts(length, size, size - overlap)
    size = math.ceil(size / align) * align
    while size < length:  # the same count of tiles, evenly spread on the alignment grid
        starts = [round(i * (length - size) / (count - 1) / align) * align for i in range(count)]
        if all(b - a <= size - overlap for a, b in zip(starts, starts[1:])):
            return size, list(dict.fromkeys(starts))
        size += align
    return length, [0]


def gaussian_window_1d(k: int) -> np.ndarray:
    """The reference InvSR window: a (k+1)-tap OpenCV Gaussian with its first tap dropped."""
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    return cv2.getGaussianKernel(k + 1, sigma)[1:, 0]


def gaussian_window(height: int, width: int) -> torch.Tensor:
    """Separable ``height×width`` float64 blending window (outer product of the 1-D windows)."""
    return torch.from_numpy(np.outer(gaussian_window_1d(height), gaussian_window_1d(width)))


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    # Float64 keeps the weighted sum exact enough for bit-stable blending; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


def blend_patches(
    x: torch.Tensor,
    fn: PatchFn,
    grid: PatchGrid,
    sf: int,
    batch_size: int = 1,
    window: Optional[WindowFn] = None,
    progress: Optional[ProgressFn] = None,
) -> torch.Tensor:
    """Run ``fn`` on every patch of ``grid`` (``batch_size`` patches per call) and blend the outputs.

    ``x``: b×c×h×w. Returns b×c'×(h·sf)×(w·sf) in ``x``'s dtype, each pixel the weighted mean of the
    patch outputs covering it. Default weights: :func:`gaussian_window` of the output patch size.
    """
    if batch_size < 1:
        raise ValueError(f"chopping batch size must be at least 1 (got {batch_size})")
    b, _, h, w = x.shape
    ph, pw = grid.height, grid.width
    if len(grid) == 1 and (ph, pw) == (h, w):  # one patch covering everything: nothing to blend
        out = fn(x)
        if progress is not None:
            progress(1, 1)
        return out
    acc_dtype = _accumulator_dtype(x.device)
    fixed = gaussian_window(ph * sf, pw * sf).to(x.device, acc_dtype) if window is None else None
    out = count = None
    total = len(grid)
    for first in range(0, total, batch_size):
        idx = list(range(first, min(first + batch_size, total)))
        patches = torch.cat([x[:, :, r:r + ph, c:c + pw] for r, c in (grid.starts[i] for i in idx)])
        res = fn(patches)
        if res.shape[-2:] != (ph * sf, pw * sf):
            raise RuntimeError(f"patch function returned {tuple(res.shape)}, expected ×{sf} of {ph}×{pw}")
        if out is None:
            out = torch.zeros(b, res.shape[1], h * sf, w * sf, dtype=acc_dtype, device=x.device)
            count = torch.zeros(b, 1, h * sf, w * sf, dtype=acc_dtype, device=x.device)
        weight = fixed if window is None else window(res, idx).to(x.device, acc_dtype)
        weight = weight.expand(len(idx) * b, 1, ph * sf, pw * sf)
        res = res.to(acc_dtype)
        for j, i in enumerate(idx):
            r, c = grid.starts[i]
            sl = (slice(None), slice(None), slice(r * sf, (r + ph) * sf), slice(c * sf, (c + pw) * sf))
            out[sl] += res[j * b:(j + 1) * b] * weight[j * b:(j + 1) * b]
            count[sl] += weight[j * b:(j + 1) * b]
        if progress is not None:
            progress(idx[-1] + 1, total)
    return (out / count).to(x.dtype)


# Input pixels over which neighbouring context tiles cross-fade: enough to hide a seam where a
# network's far receptive field still differs between tiles, short enough to cost little compute.
FEATHER = 4


def context_grid(h: int, w: int, core: int, margin: int, feather: int = FEATHER, align: int = 1) -> PatchGrid:
    """Balanced tiles for :func:`context_window`: each contributes at most ``core`` pixels each way
    (more at the image border) and carries ``margin`` pixels of context on every inner side, so
    neighbours overlap by ``2·margin + feather``. Tiles are at most ``core + 2·margin + feather``
    (rounded up to ``align``, see :meth:`PatchGrid.balanced`)."""
    if core < 1 or margin < 0 or feather < 0:
        raise ValueError(f"need core ≥ 1 and margin, feather ≥ 0 (got {core}, {margin}, {feather})")
    overlap = 2 * margin + feather
    return PatchGrid.balanced(h, w, core + overlap, overlap, align)


def _neighbour_overlaps(starts: Sequence[int], size: int, length: int) -> dict[int, tuple[int, int]]:
    """start -> (overlap with the previous tile, with the next); -1 where the side is the image border."""
    ordered = sorted(set(starts))
    out = {}
    for k, s in enumerate(ordered):
        before = ordered[k - 1] + size - s if k > 0 and s > 0 else -1
        after = s + size - ordered[k + 1] if k + 1 < len(ordered) and s + size < length else -1
        out[s] = (before, after)
    return out


def _axis_weights(size: int, before: int, after: int, margin: int, feather: int) -> torch.Tensor:
    """1-D weights over ``size`` output pixels: 0 on the first ``margin`` pixels of an inner side, then a
    linear rise over ``feather`` pixels; flat 1 on a side at the image border (``before``/``after`` < 0).
    A side's margin is capped at half the overlap with its neighbour, so every pixel keeps a weight."""
    x = torch.arange(size, dtype=torch.float64)
    weights = torch.ones(size, dtype=torch.float64)
    for overlap, dist in ((before, x), (after, x.flip(0))):
        if overlap >= 0:
            m = min(margin, overlap // 2)
            weights *= ((dist - m + 1) / (feather + 1)).clamp(0, 1)
    return weights


def context_window(grid: PatchGrid, h: int, w: int, margin: int, sf: int, feather: int = FEATHER) -> WindowFn:
    """A ``window=`` for :func:`blend_patches` that crops rather than blends: an output pixel is taken
    only from tiles where it lies at least ``margin`` input pixels inside every inner tile side
    (image borders need no context), cross-fading over ``feather`` pixels where tiles meet.

    ``grid`` is any grid covering the h×w image (a :func:`context_grid`, or a smart-chopping grid whose
    overlaps may be smaller: there each side keeps half the overlap as its margin). ``sf``: the scale.
    """
    rows = _neighbour_overlaps([r for r, _ in grid.starts], grid.height, h)
    bands: dict[int, list[int]] = {}
    for r, c in grid.starts:
        bands.setdefault(r, []).append(c)
    cols = {r: _neighbour_overlaps(cs, grid.width, w) for r, cs in bands.items()}

    def tile_weights(i: int) -> torch.Tensor:
        r, c = grid.starts[i]
        along_h = _axis_weights(grid.height * sf, *(o * sf for o in rows[r]), margin * sf, feather * sf)
        along_w = _axis_weights(grid.width * sf, *(o * sf for o in cols[r][c]), margin * sf, feather * sf)
        return torch.outer(along_h, along_w)

    def window(res: torch.Tensor, idx: Sequence[int]) -> torch.Tensor:
        per_tile = torch.stack([tile_weights(i) for i in idx])[:, None]
        return per_tile.repeat_interleave(res.shape[0] // len(idx), dim=0)  # b images per tile

    return window


def multiply_windows(first: WindowFn, second: WindowFn) -> WindowFn:
    """Both windows' weights at once (e.g. context cropping × smart chopping's attention weights)."""
    # On the CPU in float64: MPS has no float64, and blend_patches moves the weights where it needs them.
    return lambda res, idx: first(res, idx).to("cpu", torch.float64) * second(res, idx).to("cpu", torch.float64)


def reflect_pad_to_patch(x: torch.Tensor, pch: int) -> tuple[torch.Tensor, int, int]:
    """Reflect-pad until both sides are at least ``pch`` (repeated, since one reflection adds < size).

    Returns the padded tensor and the accumulated (top, left) offsets of the original image in it.
    """
    top_total = left_total = 0
    while x.shape[-2] < pch or x.shape[-1] < pch:
        h, w = x.shape[-2:]
        top = int(np.clip((pch - h) // 2, 0, h - 1))
        bottom = int(np.clip(pch - h - top, 0, h - 1))
        left = int(np.clip((pch - w) // 2, 0, w - 1))
        right = int(np.clip(pch - w - left, 0, w - 1))
        if top == bottom == left == right == 0:
            raise ValueError(f"cannot reflect-pad a {h}×{w} image (each side needs at least 2 pixels)")
        x = F.pad(x, (left, right, top, bottom), mode="reflect")
        top_total += top
        left_total += left
    return x, top_total, left_total


def pad_to_multiple(x: torch.Tensor, mod: int) -> torch.Tensor:
    """Reflect-pad bottom/right so that height and width are multiples of ``mod`` (edge-replicate when
    the image is too small to reflect that far)."""
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % mod, (-w) % mod
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect" if pad_h < h and pad_w < w else "replicate")
