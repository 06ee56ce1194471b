import ncnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import run_settings
from utils import devices
from utils.backends import backend_status, load_backend
from utils.backends.realesrgan import RealESRGANBackend, packaged_model_files, runtime_choice
from utils.config import ConfigError, validate_config, with_overrides
from utils.runtimes import ov_core
from utils.runtimes.policy import Choice
from utils.settings import config_problems
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
    backend = load_backend("realesrgan", with_overrides(cfg, {"runtime": "ncnn"}))
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


WITHOUT_BF16 = ("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")


@pytest.fixture
def cpu_only(monkeypatch):
    """This machine as any CPU-only one; the test fakes OpenVINO's capability report and AMX itself."""
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cpu"))

    def cpu(ov_capabilities=WITHOUT_BF16, amx=False):
        monkeypatch.setattr(ov_core, "capabilities", lambda: ov_capabilities)
        monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: amx)

    return cpu


def test_auto_runtime_is_ncnn_on_a_cpu_without_bf16(cfg, cpu_only):
    cpu_only(WITHOUT_BF16, amx=False)
    assert runtime_choice(cfg) == Choice("ncnn", "float32", "cpu")
    assert RealESRGANBackend.model_key(cfg)[0] == Choice("ncnn", "float32", "cpu")


def test_auto_runtime_is_openvino_bf16_where_openvino_lists_bf16(cfg, cpu_only):
    cpu_only(("BF16", "FP32"), amx=False)
    assert runtime_choice(cfg) == Choice("openvino", "bfloat16", "cpu")
    cpu_only(("BF16", "FP32"), amx=True)  # AMX: OpenVINO's bf16 uses it too
    assert runtime_choice(cfg) == Choice("openvino", "bfloat16", "cpu")


def test_auto_runtime_on_gpus(cfg, monkeypatch):
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cuda"))
    assert runtime_choice(cfg) == Choice("torch", "float16", "cuda")
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("mps"))
    assert runtime_choice(cfg) == Choice("torch", "float32", "mps")


def ncnn_and(cfg, butterfly, overrides: dict):
    """(backend with ``overrides``, its result on a 32×40 wing edge, the ncnn backend's result)."""
    lr = to_tensor(butterfly[100:132, 60:100])
    chosen = with_overrides(cfg, overrides)
    backend = load_backend("realesrgan", chosen)
    sr = backend.upscale(lr, run_settings(chosen, "realesrgan"))
    reference = load_backend("realesrgan", with_overrides(cfg, {"runtime": "ncnn"})).upscale(
        lr, run_settings(cfg, "realesrgan"))
    return backend, sr, reference


def test_torch_float32_matches_ncnn(cfg, butterfly):
    backend, sr, reference = ncnn_and(cfg, butterfly, {"runtime": "torch", "precision": "float32"})
    assert backend.identity["runtime"] == "torch" and backend.identity["precision"] == "float32"
    assert psnr(sr, reference) >= 60


def test_openvino_float32_matches_ncnn(cfg, butterfly):
    backend, sr, reference = ncnn_and(cfg, butterfly, {"runtime": "openvino", "precision": "float32"})
    made = backend.identity
    assert (made["backend"], made["runtime"], made["precision"], made["device"]) == \
        ("realesrgan", "openvino", "float32", "cpu")
    assert list(made["weights"]) == ["REALESRGAN_X4PLUS_UP4X.param", "REALESRGAN_X4PLUS_UP4X.bin"]
    assert psnr(sr, reference) >= 50


def test_openvino_bfloat16_stays_within_45_db_of_ncnn(cfg, butterfly):
    if "BF16" not in ov_core.capabilities():
        pytest.skip("this CPU's OpenVINO plugin does not list BF16")
    backend, sr, reference = ncnn_and(cfg, butterfly, {"runtime": "openvino", "precision": "bfloat16"})
    assert backend.identity["precision"] == "bfloat16"
    assert 45 <= psnr(sr, reference) < 80  # bf16 really ran: float32 reaches ~100 dB


def test_custom_model_files_run_on_ncnn(cfg, cpu_only):
    cpu_only(("BF16", "FP32"))
    param, weights = packaged_model_files()
    custom = with_overrides(cfg, {"realesrgan.param_file": str(param), "realesrgan.model_file": str(weights)})
    assert runtime_choice(custom).runtime == "ncnn"
    forced = with_overrides(custom, {"runtime": "openvino"})
    status = RealESRGANBackend.availability(forced)
    assert not status.ok and "openvino converts only the packaged x4plus" in status.reason


@pytest.mark.parametrize("overrides,words", [
    ({"runtime": "ncnn", "precision": "bfloat16"}, "precision bfloat16: realesrgan on ncnn runs float32 only"),
    ({"runtime": "torch", "precision": "float16"}, "float16 is not supported by torch on cpu"),
    ({"runtime": "openvino", "precision": "bfloat16"}, "needs a CPU whose OpenVINO plugin lists BF16"),
])
def test_runtime_and_precision_that_cannot_run_are_refused(cfg, cpu_only, overrides, words):
    cpu_only(WITHOUT_BF16)
    status = RealESRGANBackend.availability(with_overrides(cfg, overrides))
    assert not status.ok and words in status.reason
    assert any(words in problem for problem in config_problems(with_overrides(cfg, overrides), "realesrgan"))


def test_runtime_values_are_validated(cfg):
    with pytest.raises(ConfigError, match="runtime must be one of auto, openvino, torch, ncnn .got 'onnx'."):
        validate_config(with_overrides(cfg, {"runtime": "onnx"}))


@pytest.mark.parametrize("old,new", [("realesrgan.engine", "runtime"), ("realesrgan.dtype", "precision"),
                                     ("sd_pipe.params.torch_dtype", "precision")])
def test_replaced_keys_in_a_users_config_are_refused_naming_the_new_one(cfg, old, new):
    from omegaconf import OmegaConf

    section, _, key = old.rpartition(".")
    users = OmegaConf.merge(cfg, OmegaConf.create({section: {key: "auto"}} if "." not in section else
                                                  {"sd_pipe": {"params": {key: "auto"}}}))
    with pytest.raises(ConfigError, match=f"{old} was replaced by the top-level {new}"):
        validate_config(users)


def test_ncnn_runs_the_x4_tail_in_bands_with_the_same_result(cfg, butterfly):
    """The trunk runs once and the ×4 tail in bands of rows (a quarter of the memory): same pixels."""
    crop = butterfly[60:132, 60:84]  # 72×24: three bands of tail rows
    backend = load_backend("realesrgan", with_overrides(cfg, {"runtime": "ncnn"}))
    sr = backend.upscale(to_tensor(crop), run_settings(cfg, "realesrgan"))
    reference = np.clip(direct_ncnn(crop.transpose(2, 0, 1)), 0, 1)
    assert sr.shape == (1, 3, 288, 96)
    np.testing.assert_allclose(sr[0].numpy(), reference, atol=1e-6)
