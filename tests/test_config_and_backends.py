import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ReadonlyConfigError

from utils.backends import BackendUnavailable, backend_status, load_backend, resolve_backend_name
from utils.config import ConfigError, load_config, validate_config, with_overrides
from utils.settings import RunSettings


def test_config_is_read_only_and_overrides_make_copies(cfg):
    with pytest.raises(ReadonlyConfigError):
        cfg.seed = 1
    new = with_overrides(cfg, {"seed": 7, "basesr.chopping.pch_size": 256})
    assert (new.seed, new.basesr.chopping.pch_size, new.color_fix) == (7, 256, cfg.color_fix)
    assert (cfg.seed, cfg.basesr.chopping.pch_size) == (12345, None)
    with pytest.raises(KeyError, match="unknown config key: basesr.chopping.pch"):
        with_overrides(cfg, {"basesr.chopping.pch": 1})


def test_reference_keys_are_present(cfg):
    for key in ["seed", "basesr.sf", "basesr.chopping.pch_size",
                "basesr.chopping.extra_bs", "timesteps", "cfg_scale", "color_fix", "tiled_vae",
                "sd_pipe.params.pretrained_model_name_or_path", "runtime", "precision",
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


def test_overrides_can_clear_a_key_and_a_chosen_value_beats_the_yaml(cfg):
    """A YAML that sets timesteps no longer hides the user's step count: null clears it."""
    yaml_steps = with_overrides(cfg, {"timesteps": [250, 150], "num_steps": 1})
    assert RunSettings.from_config(yaml_steps, "invsr").timesteps == (250, 150)
    chosen = with_overrides(yaml_steps, {"num_steps": 3, "timesteps": None})
    assert chosen.timesteps is None
    assert RunSettings.from_config(chosen, "invsr").timesteps == (200, 100, 50)


def test_one_validation_names_every_bad_value(cfg):
    bad = with_overrides(cfg, {"outscale": 7, "color_fix": "sepia", "realesrgan.tile_size": 7,
                               "output.quality": 101, "postprocess.min_overlap": 0.6})
    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(bad, "realesrgan")
    for words in ("outscale must be between 1 and 4 (got 7)", "color_fix must be one of", "realesrgan.tile_size",
                  "output.quality", "min_overlap < max_overlap"):
        assert words in str(err.value)
    validate_config(cfg)  # the shipped config is valid


def test_backends_are_cached_by_model_identity_not_by_settings(cfg):
    """Settings changes reuse the loaded model; a different model file loads another instance."""
    first = load_backend("realesrgan", cfg)
    assert load_backend("realesrgan", with_overrides(cfg, {"realesrgan.tile_size": 64, "color_fix": "none",
                                                          "seed": 1, "outscale": 2})) is first
    assert load_backend("bicubic", cfg) is load_backend("bicubic", with_overrides(cfg, {"bicubic.tile_size": 64}))


def test_settings_record_holds_what_changes_the_output(cfg):
    real = RunSettings.from_config(cfg, "realesrgan").for_input(64, 64).record()
    assert real["color_fix"] == cfg.color_fix and real["tile_size"] == 448 and real["outscale"] == 4.0
    # InvSR-only knobs and batching do not change a Real-ESRGAN output, so they are not recorded.
    assert not {"seed", "timesteps", "batch_size", "quality"} & real.keys()
    invsr = RunSettings.from_config(with_overrides(cfg, {"output.format": "webp"}), "invsr").record()
    assert invsr["seed"] == 12345 and invsr["timesteps"] == [200] and invsr["quality"] == 95


def test_loading_a_backend_leaves_the_process_thread_count_alone(cfg):
    """Threads are set once by the entry point (utils.devices.set_threads); a model load never resets them."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        for runtime in ("torch", "ncnn", "openvino"):  # three model identities: each is a fresh load
            load_backend("realesrgan", with_overrides(cfg, {"runtime": runtime, "precision": "float32"}))
        load_backend("span", cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
