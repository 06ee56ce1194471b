"""A user's model file on OpenVINO: equal to torch in float32, the IR keyed by the file's content, and
torch with one note when OpenVINO cannot convert the model."""
import numpy as np
import openvino
import pytest
import torch

from tests.custom_models import random_model, save_model
from tests.test_custom_backend import cli, custom_cfg, make_inputs, psnr
from utils.backends.custom import CustomBackend
from utils.runtimes import ir_cache, ov_core
from utils.settings import RunSettings

pytestmark = pytest.mark.usefixtures("ir_dir")


@pytest.fixture(scope="module")
def lr(butterfly) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(butterfly[40:104, 30:110].transpose(2, 0, 1)))[None]  # 64×80


def upscaled(cfg, path, lr, **overrides):
    run = custom_cfg(cfg, path, **overrides)
    backend = CustomBackend(run)
    return backend, backend.upscale(lr, RunSettings.from_config(run, "custom"))


@pytest.mark.parametrize("arch", ["Compact", "SPAN"])
def test_openvino_float32_equals_torch(tmp_path, cfg, lr, arch):
    path = save_model(random_model(arch), tmp_path / f"{arch}.pth")
    backend, sr = upscaled(cfg, path, lr, runtime="openvino", precision="float32")
    assert (backend.identity["runtime"], backend.identity["precision"]) == ("openvino", "float32")
    _, reference = upscaled(cfg, path, lr, runtime="torch", precision="float32")
    assert sr.shape == reference.shape == (1, 3, 128, 160)
    assert psnr(sr, reference) >= 50


def test_auto_is_openvino_bfloat16_where_the_cpu_lists_bf16(tmp_path, cfg, lr):
    if "BF16" not in ov_core.capabilities():
        pytest.skip("this CPU's OpenVINO plugin does not list BF16")
    path = save_model(random_model("Compact"), tmp_path / "c.safetensors")
    backend, sr = upscaled(cfg, path, lr, runtime="auto", precision="auto")
    assert (backend.identity["runtime"], backend.identity["precision"]) == ("openvino", "bfloat16")
    _, reference = upscaled(cfg, path, lr, runtime="torch", precision="float32")
    assert 40 <= psnr(sr, reference) < 80  # bf16 really ran


def test_the_ir_is_keyed_by_the_files_content(tmp_path, cfg, lr, monkeypatch):
    first = save_model(random_model("Compact"), tmp_path / "a.pth")
    upscaled(cfg, first, lr, runtime="openvino", precision="float32")
    real_convert, converted = ir_cache.convert, []
    monkeypatch.setattr(ir_cache, "convert", lambda conversion, xml: converted.append(xml) or real_convert(
        conversion, xml))
    (tmp_path / "copy").mkdir()
    same = save_model(random_model("Compact"), tmp_path / "copy" / "a.pth")
    upscaled(cfg, same, lr, runtime="openvino", precision="float32")
    assert converted == []  # the same weights under another path: the IR is reused
    other = save_model(random_model("Compact", seed=1), tmp_path / "b.pth")
    upscaled(cfg, other, lr, runtime="openvino", precision="float32")
    assert len(converted) == 1


def test_a_model_openvino_cannot_convert_runs_on_torch_with_one_note(tmp_path, capsys, monkeypatch):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Check 'is_op_supported' failed: aten::weird_op\nmore detail")

    monkeypatch.setattr(openvino, "convert_model", unsupported)
    path = save_model(random_model("Compact"), tmp_path / "odd.pth")
    inputs = make_inputs(tmp_path / "in")
    (inputs / "b.png").write_bytes((inputs / "a.png").read_bytes())  # two images, one note
    assert cli("-i", inputs, "-o", tmp_path / "out", "--model", path, "--runtime", "openvino") == 0
    err = capsys.readouterr().err
    note = ("odd.pth: OpenVINO could not convert RealESRGAN Compact (RuntimeError: Check 'is_op_supported' "
            "failed: aten::weird_op); running on torch")
    assert err.count("OpenVINO could not convert") == 1 and note in err
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "b.png").is_file()
