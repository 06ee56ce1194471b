import pytest
import torch
import torch.nn.functional as F

from utils.tiling.chopping import PatchGrid, blend_patches
from utils.tiling.smart_chopping import attention_window, smart_grid


def _coverage(grid: PatchGrid, h: int, w: int) -> torch.Tensor:
    cover = torch.zeros(h, w, dtype=torch.int32)
    for r, c in grid.starts:
        assert 0 <= r <= h - grid.height and 0 <= c <= w - grid.width
        cover[r:r + grid.height, c:c + grid.width] += 1
    return cover


def _textured(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(1, 3, max(h // 6, 1), max(w // 6, 1), generator=g)
    return (F.interpolate(low, size=(h, w), mode="bilinear") + 0.2 * torch.rand(1, 3, h, w, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("h,w", [(32, 32), (31, 33), (33, 31), (33, 33), (64, 100), (97, 40), (130, 131)])
def test_grid_covers_every_pixel_with_border_aligned_patches(h, w):
    pch = 32
    grid = smart_grid(_textured(h, w), pch)
    cover = _coverage(grid, h, w)
    assert cover.min() >= 1
    assert (grid.height, grid.width) == (min(pch, h), min(pch, w))
    assert max(r for r, _ in grid.starts) == h - grid.height
    assert max(c for _, c in grid.starts) == w - grid.width


def test_flat_image_needs_fewer_patches_than_half_overlap():
    flat = torch.full((1, 3, 200, 300), 0.5)
    smart = smart_grid(flat, 32)
    fixed = PatchGrid.regular(200, 300, 32, 16)
    assert len(smart) < len(fixed)
    assert _coverage(smart, 200, 300).min() >= 1
    # A flat image gets the minimum overlap: stride 24 = 32 · (1 − 0.25).
    cols = sorted({c for _, c in smart.starts})
    assert cols[1] - cols[0] == 24


def test_detailed_regions_get_more_overlap():
    img = torch.full((1, 3, 64, 256), 0.5)
    img[..., 128:] = torch.rand(1, 3, 64, 128, generator=torch.Generator().manual_seed(1))
    grid = smart_grid(img, 32)
    cols = sorted({c for _, c in grid.starts})
    strides = [b - a for a, b in zip(cols, cols[1:])]
    assert strides[0] == 24 and min(strides[-3:-1]) <= 17  # flat left: 25 %; noisy right: ≈ 50 %


def test_invalid_overlap_rejected():
    with pytest.raises(ValueError):
        smart_grid(torch.zeros(1, 3, 64, 64), 32, 0.6, 0.4)


@pytest.mark.parametrize("sf", [1, 4])
@pytest.mark.parametrize("h,w", [(31, 45), (70, 90)])
def test_identity_blending_with_attention_window_returns_input(sf, h, w):
    x = _textured(h, w, seed=2).expand(2, 3, h, w).contiguous()
    x[1] = 1 - x[1]
    grid = smart_grid(x, 32)

    def model(p):
        return p if sf == 1 else F.interpolate(p, scale_factor=sf, mode="nearest")

    out = blend_patches(x, model, grid, sf, batch_size=3, window=attention_window())
    assert out.shape == (2, 3, h * sf, w * sf)
    assert torch.allclose(out, model(x), atol=1e-5)


def test_attention_window_weights():
    res = torch.zeros(2, 3, 16, 16)
    res[0, :, :, 8:] = 1.0  # patch 0 has an edge, patch 1 is flat
    wts = attention_window()(res, [0, 1])
    assert wts.shape == (2, 1, 16, 16) and torch.all(wts > 0)
    ratio = wts[0, 0] / wts[1, 0]  # flat patch: Gaussian × 0.7; edge patch: up to Gaussian × 1.0
    assert ratio.min() >= 1 - 1e-6 and abs(ratio.max().item() - 1 / 0.7) < 1e-3
