import ncnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datapipe.image_io import read_image
from tests.conftest import DATASETS
from utils.backends import backend_status, create_backend
from utils.backends.realesrgan import RealESRGANBackend, packaged_model_files
from utils.config import with_overrides
from utils.pipeline import to_tensor


def direct_ncnn(rgb_chw: np.ndarray) -> np.ndarray:
    """Real-ESRGAN x4plus run by ncnn with nothing of ours in between."""
    param, weights = packaged_model_files()
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.load_param(str(param))
    net.load_model(str(weights))
    ex = net.create_extractor()
    arr = np.ascontiguousarray(rgb_chw, dtype=np.float32)
    ex.input("data", ncnn.Mat(arr))
    _, out = ex.extract("output")
    return np.array(out)


def test_realesrgan_is_available_offline(cfg):
    assert backend_status(cfg)["realesrgan"].ok
    param, weights = packaged_model_files()
    assert param.stat().st_size > 100_000 and weights.stat().st_size > 30_000_000


def test_realesrgan_upscales_4x_and_matches_direct_ncnn(cfg, butterfly):
    crop = butterfly[100:132, 60:100]  # 32×40, a wing edge
    lr = to_tensor(crop)
    backend = create_backend("realesrgan", cfg)
    assert backend.device == "cpu"
    sr = backend.upscale(lr)
    assert sr.shape == (1, 3, 128, 160) and sr.dtype == torch.float32
    assert 0 <= sr.min() and sr.max() <= 1
    reference = np.clip(direct_ncnn(crop.transpose(2, 0, 1)), 0, 1)
    np.testing.assert_allclose(sr[0].numpy(), reference, atol=1e-6)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert (sr - bicubic).abs().mean() > 0.01
    # A GAN upscaler restores edges: its gradient energy is clearly above bicubic's.
    grad = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert grad(sr) > 1.2 * grad(bicubic)


def test_tiled_result_has_no_seams(cfg):
    """Tiles with the default context overlap reproduce the whole-image result (Set14 crop)."""
    img = read_image(DATASETS / "Set14" / "comic.png")
    lr = to_tensor(img.rgb[:160, :200])
    whole = RealESRGANBackend(with_overrides(cfg, {"realesrgan.tile_size": 256})).upscale(lr)
    tiled_cfg = with_overrides(cfg, {"realesrgan.tile_size": 128})
    patches = []
    tiled = RealESRGANBackend(tiled_cfg).upscale(lr, progress=lambda d, t: patches.append(t))
    assert patches[-1] == 4  # 2×2 tiles, so seams exist to be tested
    mae = (whole - tiled).abs().mean().item()
    assert mae < 1 / 255, f"tiled differs from whole by {mae * 255:.3f}/255"


def test_missing_model_files_make_it_unavailable(cfg, tmp_path):
    broken = with_overrides(cfg, {"realesrgan.param_file": str(tmp_path / "x.param"),
                                  "realesrgan.model_file": str(tmp_path / "x.bin")})
    status = RealESRGANBackend.availability(broken)
    assert not status.ok and "x.param" in status.reason
