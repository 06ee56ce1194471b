import pytest
import torch

from utils.postprocess.attention import attention_map
from utils.postprocess.fusion import fuse


def _pair():
    g = torch.Generator().manual_seed(0)
    detail = torch.full((2, 3, 40, 40), 0.5)
    detail[..., 20:, :] = 0.9
    detail += 0.05 * torch.rand(2, 3, 40, 40, generator=g)
    smooth = torch.full((2, 3, 40, 40), 0.3)
    return detail, smooth


@pytest.mark.parametrize("method", ["weighted", "max"])
def test_identical_candidates_come_back(method):
    x, _ = _pair()
    assert torch.allclose(fuse([x, x, x], method), x, atol=1e-6)
    assert fuse([x], method) is x


def test_weighted_is_attention_blend():
    detail, smooth = _pair()
    out = fuse([detail, smooth], "weighted")
    a = attention_map(detail)
    assert torch.allclose(out, a * detail + (1 - a) * smooth, atol=1e-6)
    # Detail kept on the edge rows, the smooth fallback dominates far from it.
    assert torch.allclose(out[..., 19:21, :], detail[..., 19:21, :], atol=0.05)
    assert torch.allclose(out[..., :3, :], smooth[..., :3, :], atol=0.05)


def test_max_picks_one_candidate_per_pixel_and_keeps_dtype():
    detail, smooth = _pair()
    out = fuse([detail.half(), smooth.half()], "max")
    assert out.dtype == torch.float16
    from_detail = (out == detail.half()).all(1)
    from_smooth = (out == smooth.half()).all(1)
    assert torch.all(from_detail | from_smooth) and from_detail.any() and from_smooth.any()


def test_bad_input_rejected():
    x, _ = _pair()
    with pytest.raises(ValueError):
        fuse([x, x[..., :10]])
    with pytest.raises(ValueError):
        fuse([x, x], "median")
    with pytest.raises(ValueError):
        fuse([])
