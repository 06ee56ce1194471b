import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.tiling.chopping import (PatchGrid, blend_patches, gaussian_window, gaussian_window_1d, grid_starts,
                            pad_to_multiple, reflect_pad_to_patch)


@pytest.mark.parametrize("length,pch,stride,expected", [
    (128, 128, 64, [0]),
    (100, 128, 64, [0]),
    (300, 128, 64, [0, 64, 128, 172]),
    (129, 128, 64, [0, 1]),
    (256, 128, 64, [0, 64, 128]),
    (400, 256, 224, [0, 144]),
])
def test_grid_starts_known_values(length, pch, stride, expected):
    assert grid_starts(length, pch, stride) == expected


@pytest.mark.parametrize("length", [1, 63, 64, 65, 127, 128, 129, 200, 511])
def test_grid_covers_every_pixel_and_ends_at_border(length):
    starts = grid_starts(length, 64, 40)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s:s + 64] = True
    assert covered.all()
    assert starts[-1] + min(64, length) == length
    assert starts == sorted(set(starts))


@pytest.mark.parametrize("h,w,tile,overlap,size,rows,cols", [
    (512, 512, 256, 32, (192, 192), [0, 160, 320], [0, 160, 320]),
    (300, 200, 256, 32, (166, 200), [0, 134], [0]),
    (256, 257, 256, 32, (256, 145), [0], [0, 112]),
    (100, 90, 256, 32, (100, 90), [0], [0]),
])
def test_balanced_grid_known_values(h, w, tile, overlap, size, rows, cols):
    grid = PatchGrid.balanced(h, w, tile, overlap)
    assert (grid.height, grid.width) == size
    assert grid.starts == tuple((r, c) for r in rows for c in cols)


@pytest.mark.parametrize("length", [33, 64, 65, 200, 257, 511, 1000])
def test_balanced_grid_covers_with_at_least_the_overlap_and_never_more_tiles(length):
    grid = PatchGrid.balanced(length, 7, 64, 16)
    rows = sorted({r for r, _ in grid.starts})
    assert grid.height <= 64 and rows[0] == 0 and rows[-1] + grid.height == length
    assert all(b - a <= grid.height - 16 for a, b in zip(rows, rows[1:]))  # overlap ≥ 16
    assert len(rows) == len(grid_starts(length, 64, 48))  # as few tiles as the plain grid


def test_gaussian_window_matches_reference_definition():
    import cv2

    k = 16
    sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
    expected = cv2.getGaussianKernel(k + 1, sigma)[1:, 0]
    np.testing.assert_array_equal(gaussian_window_1d(k), expected)
    w = gaussian_window(k, 8).numpy()
    assert w.shape == (16, 8) and w.dtype == np.float64
    np.testing.assert_allclose(w, np.outer(expected, gaussian_window_1d(8)))
    # Dropping the first tap of the (k+1)-tap kernel makes the even window peak at index k/2 - 1.
    assert int(np.argmax(gaussian_window_1d(k))) == k // 2 - 1


@pytest.mark.parametrize("h,w,pch,stride", [(50, 70, 32, 16), (33, 64, 32, 20), (20, 90, 32, 24)])
@pytest.mark.parametrize("sf", [1, 4])
def test_blending_an_exact_model_reproduces_it(h, w, pch, stride, sf):
    """With a model that is local (nearest upsampling), blended patches equal the whole-image result."""
    x = torch.rand(2, 3, h, w)
    fn = lambda p: F.interpolate(p, scale_factor=sf, mode="nearest")  # noqa: E731
    grid = PatchGrid.regular(h, w, pch, stride)
    out = blend_patches(x, fn, grid, sf, batch_size=3)
    assert out.shape == (2, 3, h * sf, w * sf) and out.dtype == x.dtype
    torch.testing.assert_close(out, fn(x), atol=1e-6, rtol=0)


def test_batching_does_not_change_results():
    x = torch.rand(1, 3, 70, 90)
    fn = lambda p: F.avg_pool2d(F.pad(p, (1, 1, 1, 1), mode="replicate"), 3, stride=1) * 2  # noqa: E731
    grid = PatchGrid.regular(70, 90, 32, 16)
    one = blend_patches(x, fn, grid, 1, batch_size=1)
    many = blend_patches(x, fn, grid, 1, batch_size=7)
    torch.testing.assert_close(one, many, atol=0, rtol=0)


def test_progress_reports_every_batch_and_can_cancel():
    x = torch.rand(1, 3, 64, 64)
    grid = PatchGrid.regular(64, 64, 32, 16)
    seen = []
    blend_patches(x, lambda p: p, grid, 1, batch_size=2, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(2, 9), (4, 9), (6, 9), (8, 9), (9, 9)]

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        blend_patches(x, lambda p: p, grid, 1, progress=stop)


def test_reflect_pad_to_patch_follows_reference_rule():
    x = torch.arange(5 * 3, dtype=torch.float32).reshape(1, 1, 5, 3)
    padded, top, left = reflect_pad_to_patch(x, 8)
    assert padded.shape[-2:] == (8, 8)
    # First round: h=5 -> top=clip(1,0,4)=1, bottom=clip(2,0,4)=2; w=3 -> left=clip(2,0,2)=2, right=clip(3,0,2)=2
    # giving 8×7; second round pads width 7 -> left 0, right 1.
    assert (top, left) == (1, 2)
    torch.testing.assert_close(padded[..., top:top + 5, left:left + 3], x)


def test_reflect_pad_refuses_single_pixel_images():
    with pytest.raises(ValueError, match="at least 2 pixels"):
        reflect_pad_to_patch(torch.rand(1, 3, 1, 5), 8)


def test_pad_to_multiple():
    x = torch.rand(1, 3, 13, 16)
    y = pad_to_multiple(x, 8)
    assert y.shape[-2:] == (16, 16)
    torch.testing.assert_close(y[..., :13, :], x)
    already = x[..., :8, :8]
    assert pad_to_multiple(already, 8) is already


@pytest.mark.parametrize("length", [96, 400, 1168, 2048])
def test_aligned_balanced_grid_keeps_the_tile_count_on_the_alignment_grid(length):
    plain, aligned = PatchGrid.balanced(length, 7, 300, 84), PatchGrid.balanced(length, 7, 300, 84, align=16)
    rows = sorted({r for r, _ in aligned.starts})
    assert len(rows) == len({r for r, _ in plain.starts})
    assert all(r % 16 == 0 for r in rows) and (aligned.height % 16 == 0 or rows == [0])
    assert rows[-1] + aligned.height == length
    assert all(b - a <= aligned.height - 84 for a, b in zip(rows, rows[1:]))  # the overlap is kept
