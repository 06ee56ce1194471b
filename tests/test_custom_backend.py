"""The custom backend: a user's model file through the packaged backends' path (tiling, CLI, resume)."""
import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

import inference_invsr
from tests.custom_models import ARCHITECTURES, random_model, save_model
from utils import devices
from utils.backends import BackendUnavailable, load_backend
from utils.backends.custom import CustomBackend
from utils.backends.rrdbnet import x4plus_state_dict
from utils.config import ConfigError, with_overrides
from utils.settings import FILE_SPECS, RunSettings
from utils.tiling.chopping import context_grid


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


def custom_cfg(cfg, path, **overrides):
    """A run of the model file ``path`` on torch unless ``overrides`` say otherwise (OpenVINO, which
    ``auto`` picks on a CPU with BF16, is tested in tests/test_custom_openvino.py)."""
    return with_overrides(cfg, {"backend": "custom", "custom.model_path": str(path), "color_fix": "none",
                                "runtime": "torch", **overrides})


def make_inputs(folder, size=(20, 24)):
    folder.mkdir()
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / "a.png")
    return folder


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_tiled_result_matches_spandrels_whole_image_forward(tmp_path, cfg, butterfly, arch, suffix):
    model = random_model(arch)
    path = save_model(model, tmp_path / f"{arch}{suffix}")
    run = custom_cfg(cfg, path, **{"custom.tile_size": 32, "outscale": ARCHITECTURES[arch][1]})
    backend = load_backend("custom", run)
    lr = torch.from_numpy(np.ascontiguousarray(butterfly[40:200, 30:222].transpose(2, 0, 1)))[None]  # 160×192
    margin = RunSettings.from_config(run, "custom").tile_margin
    assert len(context_grid(160, 192, 32, margin)) >= 2  # really tiled, at the model's margin
    tiled = backend.upscale(lr, RunSettings.from_config(run, "custom"))
    with torch.inference_mode():
        whole = model(lr).clamp(0, 1)
    assert tiled.shape == whole.shape == (1, 3, 160 * backend.scale, 192 * backend.scale)
    assert psnr(tiled, whole) >= 45


def cli(*args) -> int:
    return inference_invsr.main([str(a) for a in args])


@pytest.mark.parametrize("arch", ["ESRGAN", "SPAN", "SwinIR", "Compact-x1", "Compact-x8"])
def test_cli_runs_a_model_file_at_its_own_scale(tmp_path, capsys, arch):
    path = save_model(random_model(arch), tmp_path / f"{arch}.safetensors")
    out = tmp_path / "out"
    assert cli("-i", make_inputs(tmp_path / "in"), "-o", out, "--model", path) == 0, capsys.readouterr().err
    scale = ARCHITECTURES[arch][1]
    with Image.open(out / "a.png") as im:
        assert im.size == (24 * scale, 20 * scale)
    assert cli("-i", tmp_path / "in", "-o", tmp_path / "out2", "--model", path, "--outscale", 1.5) == 0
    with Image.open(tmp_path / "out2" / "a.png") as im:
        assert im.size == (36, 30)  # outscale is relative to the input, as for every backend


def test_basicsr_x4plus_file_equals_the_packaged_realesrgan(tmp_path, capsys):
    """A user's RealESRGAN_x4plus.pth (BasicSR layout, params_ema, float32) gives the packaged result."""
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": {k: v.float() for k, v in x4plus_state_dict().items()}}, path)
    src = make_inputs(tmp_path / "in", size=(24, 28))
    assert cli("-i", src, "-o", tmp_path / "mine", "--model", path) == 0
    assert cli("-i", src, "-o", tmp_path / "packaged", "--backend", "realesrgan") == 0
    mine, packaged = (torch.from_numpy(np.asarray(Image.open(tmp_path / d / "a.png"), dtype=np.float32) / 255)
                      for d in ("mine", "packaged"))
    assert mine.shape == packaged.shape == (96, 112, 3)
    assert psnr(mine, packaged) >= 45


def test_another_file_under_the_same_name_redoes_the_outputs(tmp_path, capsys):
    src, out, path = make_inputs(tmp_path / "in"), tmp_path / "out", tmp_path / "mine.pth"
    save_model(random_model("Compact", seed=1), path)
    assert cli("-i", src, "-o", out, "--model", path) == 0
    first = (out / "a.png").read_bytes()
    capsys.readouterr()
    assert cli("-i", src, "-o", out, "--model", path) == 0
    assert "0 written, 1 skipped" in capsys.readouterr().err
    save_model(random_model("Compact", seed=2), path)  # same name, other weights
    assert cli("-i", src, "-o", out, "--model", path) == 0
    err = capsys.readouterr().err
    assert "1 written, 0 skipped" in err and "redone: model changed (weights)" in err
    assert (out / "a.png").read_bytes() != first


def test_cli_refuses_bad_files_and_conflicts_before_any_work(tmp_path, capsys):
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    with pytest.raises(SystemExit) as exited:
        cli("-i", make_inputs(tmp_path / "in"), "-o", tmp_path / "out", "--model", text)
    assert exited.value.code == 2 and "notes.pth: not a PyTorch model file" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    path = save_model(random_model("Compact"), tmp_path / "x2.pth")
    with pytest.raises(SystemExit):
        cli("-i", tmp_path / "in", "-o", tmp_path / "out", "--model", path, "--backend", "span")
    assert "--model runs your model file (the custom backend), not --backend span" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli("-i", tmp_path / "in", "-o", tmp_path / "out", "--model", path, "--outscale", 5)
    assert "outscale must be between 1 and 4" in capsys.readouterr().err


def test_outscale_may_reach_an_x8_models_scale(tmp_path, cfg):
    path = save_model(random_model("Compact-x8"), tmp_path / "x8.pth")
    assert RunSettings.from_config(custom_cfg(cfg, path, outscale=8), "custom").outscale == 8
    with pytest.raises(ConfigError, match="outscale must be between 1 and 8"):
        RunSettings.from_config(custom_cfg(cfg, path, outscale=9), "custom")
    by_width = RunSettings.from_config(custom_cfg(cfg, path, **{"output.width": 192}), "custom")
    assert by_width.for_input(20, 24).outscale == 8  # a target width may ask for ×8 too


def test_half_precision_only_where_the_descriptor_allows(tmp_path, cfg, monkeypatch):
    path = save_model(random_model("Compact"), tmp_path / "c.pth")
    monkeypatch.setattr(devices, "cpu_has_fast_bf16", lambda: True)  # as on a CPU with AMX
    backend = CustomBackend(custom_cfg(cfg, path))
    assert backend.identity["precision"] == "bfloat16"
    assert next(backend.descriptor.model.parameters()).dtype == torch.bfloat16
    monkeypatch.setattr(backend.model.descriptor, "supports_bfloat16", False)
    assert CustomBackend(custom_cfg(cfg, path)).identity["precision"] == "float32"  # auto: falls back
    with pytest.raises(BackendUnavailable, match="c.pth: RealESRGAN Compact does not support bfloat16"):
        CustomBackend(custom_cfg(cfg, path, precision="bfloat16"))


def test_window_attention_tiles_are_aligned_to_the_window(tmp_path, cfg, butterfly, monkeypatch):
    """SwinIR's windows are anchored at the image origin: tiles on its window grid reproduce the whole
    image; the same tiles off the grid compute other windows (measured 151 vs 46 dB)."""
    model = random_model("SwinIR")
    run = custom_cfg(cfg, save_model(model, tmp_path / "swinir.pth"),
                     **{"custom.tile_size": 24, "custom.tile_margin": 12, "outscale": 3})
    backend, settings = CustomBackend(run), RunSettings.from_config(run, "custom")
    aligned = settings.spec
    assert aligned.size_multiple == model.window_size == 4
    lr = torch.from_numpy(np.ascontiguousarray(butterfly[40:140, 30:150].transpose(2, 0, 1)))[None]  # 100×120
    with torch.inference_mode():
        whole = model(lr).clamp(0, 1)
    assert psnr(backend.upscale(lr, settings), whole) >= 100
    monkeypatch.setitem(FILE_SPECS, "custom", lambda path: dataclasses.replace(aligned, size_multiple=1))
    assert psnr(backend.upscale(lr, settings), whole) < 60
