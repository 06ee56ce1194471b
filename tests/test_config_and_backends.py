import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from utils.backends import BackendUnavailable, backend_status, create_backend, resolve_backend_name
from utils.config import load_config, with_overrides


def test_config_is_read_only_and_overrides_make_copies(cfg):
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 1
    new = with_overrides(cfg, {"seed": 7, "basesr.chopping.pch_size": 256, "color_fix": None})
    assert (new.seed, new.basesr.chopping.pch_size, new.color_fix) == (7, 256, cfg.color_fix)
    assert (cfg.seed, cfg.basesr.chopping.pch_size) == (12345, 128)
    with pytest.raises(KeyError, match="unknown config key: basesr.chopping.pch"):
        with_overrides(cfg, {"basesr.chopping.pch": 1})


def test_reference_keys_are_present(cfg):
    for key in ["seed", "basesr.sf", "basesr.chopping.pch_size", "basesr.chopping.weight_type",
                "basesr.chopping.extra_bs", "timesteps", "cfg_scale", "color_fix", "tiled_vae",
                "sd_pipe.params.pretrained_model_name_or_path", "sd_pipe.params.torch_dtype",
                "model_start.params", "model_start.ckpt_path"]:
        assert OmegaConf.select(cfg, key, default="MISSING") != "MISSING", key


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_auto_picks_the_offline_default_and_says_why(cfg, tmp_path, monkeypatch):
    # No InvSR weights anywhere: an empty HF cache and missing local paths.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    offline = with_overrides(cfg, {"sd_pipe.params.pretrained_model_name_or_path": str(tmp_path / "no-sd"),
                                   "model_start.ckpt_path": str(tmp_path / "no.pth")})
    status = backend_status(offline)
    assert status["realesrgan"].ok and status["bicubic"].ok and not status["invsr"].ok
    assert status["invsr"].reason
    name, notice = resolve_backend_name(offline)
    assert name == "realesrgan" and "offline default" in notice
    with pytest.raises(BackendUnavailable):
        resolve_backend_name(offline, "invsr")
    with pytest.raises(BackendUnavailable, match="unknown backend 'esrgan'"):
        resolve_backend_name(offline, "esrgan")


def test_backends_are_cached_per_config(cfg):
    assert create_backend("bicubic", cfg) is create_backend("bicubic", cfg)
    other = with_overrides(cfg, {"bicubic.tile_size": 64})
    assert create_backend("bicubic", other) is not create_backend("bicubic", cfg)
    assert create_backend("bicubic", other).cfg.bicubic.tile_size == 64
