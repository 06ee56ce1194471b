"""Noise-predictor structure/loading and InvSR weight resolution (offline, nothing cached)."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tiny_sd import TINY_NP_PARAMS, tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)

from utils.backends.invsr import weights as invsr_weights
from utils.config import load_config, with_overrides
from utils.backends.invsr.weights import WeightsNotFound, download_weights, resolve_weights
from utils.backends.invsr.noise_predictor import NoisePredictor, load_noise_predictor

KEYS_FILE = Path(__file__).resolve().parents[2] / "shared" / "invsr" / "noise_predictor_sd_turbo_keys.txt"


def test_released_config_matches_checkpoint_keys():
    expected = []
    for line in KEYS_FILE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, shape = line.split()
            expected.append((key, tuple(int(d) for d in shape.split(","))))
    params = OmegaConf.to_container(load_config().model_start.params)
    model = NoisePredictor(**params)
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected
    assert sum(p.numel() for p in model.parameters()) == 33837576


def test_noise_predictor_output_shape_and_sampling():
    model = NoisePredictor(**TINY_NP_PARAMS).eval()
    lr = torch.rand(2, 3, 16, 24)
    eps = torch.randn(2, 4, 8, 12)
    with torch.no_grad():
        noise = model(lr, torch.tensor([199.0]), eps)
        mean, logvar = model.encoder(lr * 2 - 1, torch.tensor([199.0, 199.0])).chunk(2, dim=1)
    assert noise.shape == (2, 4, 8, 12)  # LR / 2 per side = latent of the ×4 image
    torch.testing.assert_close(noise, mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps)
    with pytest.raises(ValueError, match="eps"):
        model(lr, torch.tensor([199.0]))


@pytest.mark.parametrize("wrap", [
    lambda sd: sd,
    lambda sd: {"state_dict": sd},
    lambda sd: {f"module.{k}": v for k, v in sd.items()},
    lambda sd: {"state_dict": {f"_orig_mod.module.{k}": v for k, v in sd.items()}},
])
def test_loading_accepts_wrapped_checkpoints(tmp_path, wrap):
    source = NoisePredictor(**TINY_NP_PARAMS)
    path = tmp_path / "np.pth"
    torch.save(wrap(source.state_dict()), path)
    target = load_noise_predictor(NoisePredictor(**TINY_NP_PARAMS), path)
    for k, v in source.state_dict().items():
        torch.testing.assert_close(target.state_dict()[k], v, rtol=0, atol=0)


def test_loading_rejects_missing_unexpected_and_misshaped_keys():
    state = NoisePredictor(**TINY_NP_PARAMS).state_dict()
    missing = dict(state)
    missing.pop("encoder.conv_out.bias")
    with pytest.raises(RuntimeError, match=r"missing \(1\): encoder.conv_out.bias"):
        load_noise_predictor(NoisePredictor(**TINY_NP_PARAMS), missing)
    with pytest.raises(RuntimeError, match="unexpected.*encoder.extra"):
        load_noise_predictor(NoisePredictor(**TINY_NP_PARAMS), {**state, "encoder.extra": torch.zeros(1)})
    bigger = NoisePredictor(**{**TINY_NP_PARAMS, "block_out_channels": [8, 32]})
    with pytest.raises(RuntimeError, match="wrong shape"):
        load_noise_predictor(bigger, state)


@pytest.fixture
def nothing_cached(monkeypatch, tmp_path):
    """Offline, empty HF home and empty weights/ folder."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(home / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(invsr_weights, "SD_LOCAL_DIR", tmp_path / "weights" / "sd-turbo")
    monkeypatch.setattr(invsr_weights, "NP_LOCAL_FILE", tmp_path / "weights" / invsr_weights.NP_FILE)
    return load_config()


def test_missing_weights_error_names_everything(nothing_cached):
    from sampler_invsr import InvSamplerSR
    from utils.backends import BACKENDS, BackendUnavailable
    from utils.backends.invsr.backend import InvSRBackend

    assert BACKENDS["invsr"] is InvSRBackend  # registered even though utils.backends.invsr.weights came first

    with pytest.raises(WeightsNotFound) as info:
        resolve_weights(nothing_cached)
    message = str(info.value)
    for needle in ("SD-Turbo", "stabilityai/sd-turbo", "--sd_path DIR", "noise predictor",
                   "noise_predictor_sd_turbo_v5.pth", "--started_ckpt_path FILE", "scripts/download_weights.py"):
        assert needle in message
    assert len(info.value.problems) == 2
    with pytest.raises(WeightsNotFound):
        InvSamplerSR(nothing_cached)
    status = InvSRBackend.availability(nothing_cached)
    assert not status.ok and status.reason.startswith("InvSR: SD-Turbo weights")
    with pytest.raises(BackendUnavailable, match="--sd_path DIR"):
        InvSRBackend(nothing_cached)
    started = time.monotonic()
    with pytest.raises(WeightsNotFound, match="HF_HUB_OFFLINE"):
        download_weights(nothing_cached)
    assert time.monotonic() - started < 2  # no network attempt, no retries


def test_explicit_paths_are_checked(nothing_cached, tiny_overrides, tmp_path):
    sd = tiny_overrides["sd_pipe.params.pretrained_model_name_or_path"]
    ckpt = tiny_overrides["model_start.ckpt_path"]
    cfg = with_overrides(nothing_cached, {"sd_pipe.params.pretrained_model_name_or_path": sd,
                                          "model_start.ckpt_path": ckpt})
    weights = resolve_weights(cfg)
    assert weights.sd_dir == Path(sd).resolve() and weights.noise_predictor == Path(ckpt).resolve()
    with pytest.raises(WeightsNotFound, match="--started_ckpt_path .*missing.pth: file not found"):
        resolve_weights(with_overrides(cfg, {"model_start.ckpt_path": str(tmp_path / "missing.pth")}))
    with pytest.raises(WeightsNotFound, match="--sd_path ./nowhere: no such directory"):
        resolve_weights(with_overrides(cfg, {"sd_pipe.params.pretrained_model_name_or_path": "./nowhere"}))
    (tmp_path / "half" / "vae").mkdir(parents=True)
    with pytest.raises(WeightsNotFound, match="not a complete.*vae/config.json"):
        resolve_weights(with_overrides(cfg, {"sd_pipe.params.pretrained_model_name_or_path": str(tmp_path / "half")}))


def test_project_weights_folder_is_found(nothing_cached, tiny_overrides, monkeypatch):
    """weights/sd-turbo and weights/noise_predictor_sd_turbo_v5.pth are used without any flag."""
    monkeypatch.setattr(invsr_weights, "SD_LOCAL_DIR", Path(tiny_overrides["sd_pipe.params.pretrained_model_name_or_path"]))
    monkeypatch.setattr(invsr_weights, "NP_LOCAL_FILE", Path(tiny_overrides["model_start.ckpt_path"]))
    weights = resolve_weights(nothing_cached)
    assert weights.noise_predictor == Path(tiny_overrides["model_start.ckpt_path"]).resolve()


def test_hf_cache_is_found(nothing_cached, tiny_overrides, tmp_path):
    """A snapshot in the Hugging Face cache layout resolves offline."""
    import shutil

    from huggingface_hub import constants

    sd_repo = Path(constants.HF_HUB_CACHE) / "models--stabilityai--sd-turbo"
    shutil.copytree(tiny_overrides["sd_pipe.params.pretrained_model_name_or_path"], sd_repo / "snapshots" / "abc")
    (sd_repo / "refs").mkdir()
    (sd_repo / "refs" / "main").write_text("abc")
    np_repo = Path(constants.HF_HUB_CACHE) / "models--OAOA--InvSR"
    (np_repo / "snapshots" / "def").mkdir(parents=True)
    shutil.copy(tiny_overrides["model_start.ckpt_path"], np_repo / "snapshots" / "def" / invsr_weights.NP_FILE)
    (np_repo / "refs").mkdir()
    (np_repo / "refs" / "main").write_text("def")
    weights = resolve_weights(nothing_cached)
    assert weights.sd_dir.name == "abc" and weights.noise_predictor.parent.name == "def"
