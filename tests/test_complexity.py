import torch

from utils.postprocess.attention import attention_map, gaussian_blur, local_variance, sobel_magnitude
from utils.postprocess.complexity import complexity_map, image_complexity


def _noise(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_flat_is_zero_and_noise_is_one():
    flat = torch.full((2, 3, 64, 64), 0.4)
    assert torch.all(image_complexity(flat) < 1e-3)
    assert torch.all(image_complexity(_noise(2, 3, 128, 128)) > 0.95)
    grey_noise = _noise(1, 1, 96, 96).expand(1, 3, 96, 96)
    assert image_complexity(grey_noise).item() > 0.95


def test_complexity_orders_smooth_below_textured():
    g = torch.linspace(0, 1, 128)
    ramp = (g.view(1, 1, 1, -1) * torch.ones(1, 3, 128, 1))
    textured = (ramp + 0.15 * _noise(1, 3, 128, 128, seed=1)).clamp(0, 1)
    c_ramp, c_tex = image_complexity(ramp).item(), image_complexity(textured).item()
    assert 0 < c_ramp < c_tex < 1


def test_complexity_dtype_and_range():
    x = _noise(3, 3, 40, 50, seed=2)
    c64 = image_complexity(x.double())
    assert c64.shape == (3,) and c64.dtype == torch.float64
    assert torch.allclose(image_complexity(x.half()).double(), c64, atol=1e-2)
    assert torch.all((c64 >= 0) & (c64 <= 1))


def test_complexity_map_localises_detail_and_covers_partial_cells():
    img = torch.full((1, 3, 70, 100), 0.5)
    img[..., :, 50:] = _noise(1, 3, 70, 50, seed=3)
    m = complexity_map(img, 16)
    assert m.shape == (1, 1, 5, 7)  # ceil(70/16), ceil(100/16): the edge pixels get cells too
    assert torch.all(m[..., :2] < 0.05)  # cells fully inside the flat half
    assert torch.all(m[..., 4:] > 0.8)  # cells fully inside the noise half
    assert torch.all((m >= 0) & (m <= 1))
    # A region map made of one window equals the global score, apart from the coarser entropy bins.
    x = _noise(1, 3, 32, 32, seed=4)
    assert abs(complexity_map(x, 32).item() - image_complexity(x).item()) < 0.05


def test_filters_known_values():
    ramp = torch.arange(20.0).view(1, 1, 1, -1).expand(1, 1, 12, 20) * 0.01
    mag = sobel_magnitude(ramp)
    assert torch.allclose(mag[..., 1:-1], torch.full_like(mag[..., 1:-1], 0.01), atol=1e-6)
    assert torch.allclose(local_variance(torch.full((1, 1, 9, 9), 0.3)), torch.zeros(1, 1, 9, 9), atol=1e-7)
    const = torch.full((1, 3, 10, 10), 0.25)
    assert torch.allclose(gaussian_blur(const, 2.0), const, atol=1e-6)


def test_attention_map_range_and_flat():
    img = torch.zeros(2, 3, 48, 48)
    img[..., 24:, :] = 1.0
    for method in ("sobel", "variance"):
        a = attention_map(img, method)
        assert a.shape == (2, 1, 48, 48)
        assert a.min() == 0 and abs(a.max().item() - 1) < 1e-6
        assert a[..., 23, :].mean() > 0.9 and a[..., 2, :].max() < 0.05  # high on the edge, low away
    assert torch.equal(attention_map(torch.full((1, 3, 16, 16), 0.7)), torch.zeros(1, 1, 16, 16))
    assert attention_map(img.half()).dtype == torch.float32
