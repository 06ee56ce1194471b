import ncnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_settings
from utils import devices
from utils.backends import backend_status, load_backend
from utils.backends.realesrgan import Engine, RealESRGANBackend, choose_engine, packaged_model_files
from utils.config import ConfigError, validate_config, with_overrides
from utils.pipeline.chain import to_tensor


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
    backend = load_backend("realesrgan", with_overrides(cfg, {"realesrgan.engine": "ncnn"}))
    assert backend.device == "cpu"
    sr = backend.upscale(lr, run_settings(cfg, "realesrgan"))
    assert sr.shape == (1, 3, 128, 160) and sr.dtype == torch.float32
    assert 0 <= sr.min() and sr.max() <= 1
    reference = np.clip(direct_ncnn(crop.transpose(2, 0, 1)), 0, 1)
    np.testing.assert_allclose(sr[0].numpy(), reference, atol=1e-6)
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    assert (sr - bicubic).abs().mean() > 0.01
    # A GAN upscaler restores edges: its gradient energy is clearly above bicubic's.
    grad = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert grad(sr) > 1.2 * grad(bicubic)


def test_missing_model_files_make_it_unavailable(cfg, tmp_path):
    broken = with_overrides(cfg, {"realesrgan.param_file": str(tmp_path / "x.param"),
                                  "realesrgan.model_file": str(tmp_path / "x.bin")})
    status = RealESRGANBackend.availability(broken)
    assert not status.ok and "x.param" in status.reason


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as any CPU-only one, whatever its flags; the test sets fast bf16 itself."""
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cpu"))

    def native_bf16(flag: bool):
        monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: flag)

    return native_bf16


def test_auto_engine_is_ncnn_on_a_cpu_without_native_bf16(cfg, cpu_only):
    cpu_only(False)
    assert choose_engine(cfg) == Engine("ncnn", "cpu", "float32")
    assert RealESRGANBackend.model_key(cfg)[0] == Engine("ncnn", "cpu", "float32")


def test_auto_engine_is_torch_bf16_on_a_cpu_with_native_bf16(cfg, cpu_only, butterfly):
    cpu_only(True)
    assert choose_engine(cfg) == Engine("torch", "cpu", "bfloat16")
    backend = RealESRGANBackend(cfg)
    identity = backend.identity
    assert (identity["backend"], identity["runtime"], identity["precision"]) == ("realesrgan", "torch", "bfloat16")
    assert set(identity["weights"]) == {"REALESRGAN_X4PLUS_UP4X.param", "REALESRGAN_X4PLUS_UP4X.bin"}
    assert backend.model.conv_first.weight.dtype == torch.bfloat16 and backend.device == "cpu"
    # An 8×8 input keeps emulated bf16 cheap on CPUs without it; the result is the ncnn one, roughly.
    lr = to_tensor(butterfly[110:118, 70:78])
    sr = backend.upscale(lr, run_settings(cfg, "realesrgan"))
    reference = torch.from_numpy(np.clip(direct_ncnn(lr[0].numpy()), 0, 1))[None]
    assert sr.shape == (1, 3, 32, 32) and psnr(sr, reference) >= 40
    cpu_only(False)
    assert RealESRGANBackend.model_key(cfg) != RealESRGANBackend.model_key(
        with_overrides(cfg, {"realesrgan.engine": "torch", "realesrgan.dtype": "bfloat16"}))


def test_auto_engine_on_gpus(cfg, monkeypatch):
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cuda"))
    assert choose_engine(cfg) == Engine("torch", "cuda", "float16")
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("mps"))
    assert choose_engine(cfg) == Engine("torch", "mps", "float32")


def test_torch_fp32_engine_matches_ncnn(cfg, butterfly):
    lr = to_tensor(butterfly[100:132, 60:100])
    chosen = with_overrides(cfg, {"realesrgan.engine": "torch", "realesrgan.dtype": "float32"})
    backend = RealESRGANBackend(chosen)
    assert backend.identity["runtime"] == "torch" and backend.identity["precision"] == "float32"
    sr = backend.upscale(lr, run_settings(chosen, "realesrgan"))
    ncnn_sr = load_backend("realesrgan", with_overrides(cfg, {"realesrgan.engine": "ncnn"})).upscale(
        lr, run_settings(cfg, "realesrgan"))
    assert psnr(sr, ncnn_sr) >= 60


def test_custom_model_files_run_on_ncnn(cfg, cpu_only):
    cpu_only(True)
    param, weights = packaged_model_files()
    custom = with_overrides(cfg, {"realesrgan.param_file": str(param), "realesrgan.model_file": str(weights)})
    assert choose_engine(custom).name == "ncnn"
    forced = with_overrides(custom, {"realesrgan.engine": "torch"})
    status = RealESRGANBackend.availability(forced)
    assert not status.ok and "torch converts only the packaged x4plus" in status.reason


@pytest.mark.parametrize("overrides,words", [
    ({"realesrgan.engine": "ncnn", "realesrgan.dtype": "bfloat16"}, "bfloat16 needs realesrgan.engine torch"),
    ({"realesrgan.engine": "torch", "realesrgan.dtype": "float16"}, "'float16' is not supported on cpu"),
])
def test_engine_and_dtype_that_cannot_run_are_refused(cfg, cpu_only, overrides, words):
    cpu_only(False)
    status = RealESRGANBackend.availability(with_overrides(cfg, overrides))
    assert not status.ok and words in status.reason


def test_engine_values_are_validated(cfg):
    with pytest.raises(ConfigError, match="realesrgan.engine must be one of auto, torch, ncnn .got 'onnx'."):
        validate_config(with_overrides(cfg, {"realesrgan.engine": "onnx"}))


def test_ncnn_runs_the_x4_tail_in_bands_with_the_same_result(cfg, butterfly):
    """The trunk runs once and the ×4 tail in bands of rows (a quarter of the memory): same pixels."""
    crop = butterfly[60:132, 60:84]  # 72×24: three bands of tail rows
    backend = load_backend("realesrgan", with_overrides(cfg, {"realesrgan.engine": "ncnn"}))
    sr = backend.upscale(to_tensor(crop), run_settings(cfg, "realesrgan"))
    reference = np.clip(direct_ncnn(crop.transpose(2, 0, 1)), 0, 1)
    assert sr.shape == (1, 3, 288, 96)
    np.testing.assert_allclose(sr[0].numpy(), reference, atol=1e-6)
