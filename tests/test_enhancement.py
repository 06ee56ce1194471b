import pytest
import torch

from utils.postprocess.enhancement import enhance_edges


def _edge_image():
    x = torch.full((2, 3, 32, 32), 0.3)
    x[..., 16:, :] = 0.7
    return x


def test_strength_zero_is_identity():
    x = torch.rand(1, 3, 20, 20, generator=torch.Generator().manual_seed(0)).half()
    assert enhance_edges(x, 0.0) is x


def test_edges_get_steeper_flat_areas_unchanged():
    x = _edge_image()
    out = enhance_edges(x, 0.5)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[..., :10, :], x[..., :10, :]) and torch.equal(out[..., 22:, :], x[..., 22:, :])
    assert out[..., 15, :].max() < 0.3 and out[..., 16, :].min() > 0.7  # overshoot on both sides
    stronger = enhance_edges(x, 1.0)
    assert (stronger[..., 16, :] - x[..., 16, :]).min() > (out[..., 16, :] - x[..., 16, :]).max()


def test_output_clamped_and_flat_noise_free():
    x = torch.zeros(1, 3, 24, 24)
    x[..., 12:, :] = 1.0
    out = enhance_edges(x, 1.0)
    assert out.min() >= 0 and out.max() <= 1
    flat = torch.full((1, 3, 16, 16), 0.5)
    assert torch.equal(enhance_edges(flat, 1.0), flat)
    with pytest.raises(ValueError):
        enhance_edges(x, 1.5)
