import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.postprocess.color_fix import (
    METHODS,
    color_fix,
    histogram_color_fix,
    hybrid_color_fix,
    rgb_to_ycbcr,
    wavelet_color_fix,
    wavelet_decompose,
    ycbcr_color_fix,
    ycbcr_to_rgb,
)


def _image(seed: int, b: int = 2, size: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Smooth random colours kept inside [0.2, 0.8] so colour conversions stay in gamut.
    low = torch.rand(b, 3, size // 8, size // 8, generator=g)
    return 0.2 + 0.6 * F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def test_bt601_known_values_and_round_trip():
    pixels = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.5]]).T.reshape(1, 3, 1, 3)
    ycc = rgb_to_ycbcr(pixels)[0, :, 0].T
    assert torch.allclose(ycc[0], torch.tensor([0.299, 0.5 - 0.299 / 1.772, 1.0]), atol=1e-6)
    assert torch.allclose(ycc[1], torch.tensor([0.114, 1.0, 0.5 - 0.114 / 1.402]), atol=1e-6)
    assert torch.allclose(ycc[2], torch.tensor([0.5, 0.5, 0.5]), atol=1e-6)
    x = _image(0)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-6)


def test_ycbcr_fix_keeps_luma_and_takes_chroma():
    # Mid-grey, mildly coloured images: any luma/chroma combination of them stays in gamut (no clamping).
    res, ref = 0.3 + 0.4 * _image(1), 0.4 + 0.2 * _image(2)
    out = rgb_to_ycbcr(ycbcr_color_fix(res, ref))
    assert torch.allclose(out[:, 0], rgb_to_ycbcr(res)[:, 0], atol=1e-5)
    assert torch.allclose(out[:, 1:], rgb_to_ycbcr(ref)[:, 1:], atol=1e-5)


def test_wavelet_decomposition_sums_back_and_self_fix_is_identity():
    x = torch.rand(2, 3, 40, 56, generator=torch.Generator().manual_seed(3))
    high, low = wavelet_decompose(x)
    assert torch.allclose(high + low, x, atol=1e-6)
    assert torch.allclose(wavelet_color_fix(x, x), x, atol=1e-6)


@pytest.mark.parametrize("radius", [1, 2, 16])
def test_binomial_blur_equals_the_dilated_3x3_convolution(radius):
    from utils.postprocess.color_fix import _binomial_blur

    x = torch.rand(2, 3, 37, 41, generator=torch.Generator().manual_seed(radius))
    k1 = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = torch.outer(k1, k1).expand(3, 1, 3, 3)
    expected = F.conv2d(F.pad(x, (radius,) * 4, mode="replicate"), kernel, groups=3, dilation=radius)
    torch.testing.assert_close(_binomial_blur(x, radius), expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("size", [(37, 41), (5, 7), (1, 1)])
def test_blur_cascade_on_the_cpu_equals_dilated_3x3_convolutions(size):
    """The CPU path (OpenCV) against the cascade computed with torch's dilated convolution, radii
    1…16, including images smaller than the widest kernel (the border is replicated)."""
    from utils.postprocess.color_fix import _blur_cascade

    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(sum(size)))
    k1 = torch.tensor([1.0, 2.0, 1.0]) / 4
    kernel = torch.outer(k1, k1).expand(3, 1, 3, 3)
    expected = x
    for radius in (1, 2, 4, 8, 16):
        expected = F.conv2d(F.pad(expected, (radius,) * 4, mode="replicate"), kernel, groups=3, dilation=radius)
    torch.testing.assert_close(_blur_cascade(x, 5), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(_blur_cascade(x.double(), 5), expected.double(), atol=1e-6, rtol=0)
    # With gradients wanted it takes torch's path, which autograd can follow.
    leaf = x.clone().requires_grad_(True)
    _blur_cascade(leaf, 5).sum().backward()
    assert leaf.grad is not None and leaf.grad.shape == x.shape


def test_wavelet_fix_is_result_high_plus_reference_low():
    res, ref = _image(8), _image(9)
    high, _ = wavelet_decompose(res)
    _, low = wavelet_decompose(ref)
    torch.testing.assert_close(wavelet_color_fix(res, ref), (high + low).clamp(0, 1), atol=1e-6, rtol=0)


def test_wavelet_fix_takes_reference_low_frequencies():
    res = _image(4)
    ref = (res + 0.1).clamp(0, 1)  # a global colour cast is pure low frequency
    out = wavelet_color_fix(res, ref)
    assert torch.allclose(out, ref, atol=1e-4)


def test_histogram_match_reproduces_reference_histogram():
    g = torch.Generator().manual_seed(5)
    res = torch.rand(1, 3, 32, 32, generator=g) * 0.5
    ref = 0.3 + 0.7 * torch.rand(1, 3, 32, 32, generator=g) ** 2
    out = histogram_color_fix(res, ref, blend=1.0)
    for c in range(3):  # same pixel count, unique values: the sorted values must coincide
        assert np.allclose(np.sort(out[0, c].flatten().numpy()), np.sort(ref[0, c].flatten().numpy()), atol=1e-6)
    half = histogram_color_fix(res, ref, blend=0.7)
    assert torch.allclose(half, 0.7 * out + 0.3 * res, atol=1e-6)


def test_hybrid_adaptive_is_the_weighted_mix_and_best_picks_a_candidate():
    res, ref = _image(6), _image(7)
    cands = [ycbcr_color_fix(res, ref), wavelet_color_fix(res, ref), histogram_color_fix(res, ref)]
    mix = hybrid_color_fix(res, ref, "adaptive")
    assert torch.allclose(mix, 0.3 * cands[0] + 0.3 * cands[1] + 0.4 * cands[2], atol=1e-6)
    best = hybrid_color_fix(res, ref, "best")
    for i in range(res.shape[0]):
        errs = [((rgb_to_ycbcr(c[i:i + 1]) - rgb_to_ycbcr(ref[i:i + 1])) ** 2).mean() for c in cands]
        assert torch.equal(best[i], cands[int(np.argmin(errs))][i])
    with pytest.raises(ValueError):
        hybrid_color_fix(res, ref, "median")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_dispatch_preserves_shape_dtype_and_range(method, dtype):
    g = torch.Generator().manual_seed(8)
    res = (torch.rand(2, 3, 24, 20, generator=g) * 1.4 - 0.2).to(dtype)
    ref = torch.rand(2, 3, 24, 20, generator=g).to(dtype)
    out = color_fix(res, ref, method)
    assert out.shape == res.shape and out.dtype == dtype and out.device == res.device
    assert out.min() >= 0 and out.max() <= 1


def test_none_only_clamps_and_unknown_method_fails():
    x = _image(9)
    assert torch.equal(color_fix(x, x, "none"), x)
    with pytest.raises(ValueError):
        color_fix(x, x, "lab")
    with pytest.raises(ValueError):
        color_fix(x, x[:, :, :10], "ycbcr")
