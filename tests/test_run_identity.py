"""An output's identity is its content: the resume record changes with every setting that changes the
output file and with the bytes of every weight file, and with nothing else."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from utils import checksums
from utils.backends.base import Availability, Backend
from utils.config import load_config, with_overrides
from utils.settings import COMMON_SETTINGS, SPECS, RunSettings, readers

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Another valid value for each text field; a new text field must be added here to be tested.
OTHER_TEXT = {"color_fix": "ycbcr", "fusion_method": "max", "output_format": "webp"}
# Fields that only count while a stage is on, with that stage.
NEEDS = {"min_overlap": {"smart_chopping": True}, "max_overlap": {"smart_chopping": True},
         "fusion_method": {"attention_fusion": True}}


def other_value(f: dataclasses.Field, value):
    if f.type == "bool":
        return not value
    if f.name == "timesteps":
        return (300, 100)
    if isinstance(value, str):
        return OTHER_TEXT[f.name]
    if value is None:
        return 64
    return value + 1 if isinstance(value, int) else value + 0.05


OUTPUT_FIELDS = [f for f in dataclasses.fields(RunSettings) if f.metadata["in_output"] and f.name != "backend"]


@pytest.mark.parametrize("field", OUTPUT_FIELDS, ids=lambda f: f.name)
def test_every_pixel_affecting_setting_changes_the_record(field):
    flag = field.metadata["flag"]
    backend = "realesrgan" if flag in COMMON_SETTINGS else readers(flag)[0]
    base = RunSettings.from_config(load_config(), backend).replace(**NEEDS.get(field.name, {})).for_input(64, 64)
    changed = base.replace(**{field.name: other_value(field, getattr(base, field.name))})
    # Quality only shapes lossy files, so it is compared on a JPEG output.
    fmt = "jpeg" if field.name == "quality" else None
    assert changed.record(fmt) != base.record(fmt), field.name


@pytest.mark.parametrize("field", [f for f in dataclasses.fields(RunSettings) if not f.metadata["in_output"]],
                         ids=lambda f: f.name)
def test_settings_that_do_not_change_the_file_do_not_change_the_record(field):
    base = RunSettings.from_config(load_config(), "realesrgan")
    changed = base.replace(**{field.name: other_value(field, getattr(base, field.name))})
    assert changed.record() == base.record()
    threads = RunSettings.from_config(with_overrides(load_config(), {"threads": 1}), "realesrgan")
    assert threads.record() == base.record()


def test_the_record_holds_the_format_written_and_the_tile_size_used():
    invsr = RunSettings.from_config(load_config(), "invsr")
    assert invsr.for_input(100, 100).record("jpeg")["output_format"] == "jpeg"
    assert invsr.for_input(100, 100).record("jpeg")["quality"] == 95
    assert "quality" not in invsr.for_input(100, 100).record("png")
    # The reference's 256-px patches apply to large inputs only while the user left the size alone.
    assert invsr.for_input(100, 100).record()["tile_size"] == 128
    assert invsr.for_input(512, 512).record()["tile_size"] == 256
    chosen = RunSettings.from_config(with_overrides(load_config(), {"basesr.chopping.pch_size": 64}), "invsr")
    assert chosen.for_input(1024, 1024).record()["tile_size"] == 64


def test_settings_a_backend_does_not_read_are_not_recorded():
    span = RunSettings.from_config(load_config(), "span").record()
    assert not {"seed", "timesteps", "cfg_scale"} & span.keys()
    assert {"tile_margin", "tile_size"} <= span.keys()
    invsr = RunSettings.from_config(load_config(), "invsr").record()
    assert "tile_margin" not in invsr and {"seed", "timesteps", "cfg_scale"} <= invsr.keys()
    assert all(spec.reads >= COMMON_SETTINGS for spec in SPECS.values())


class WeightedBackend(Backend):
    """A backend whose weights are one file, to watch the identity follow the file's bytes."""

    name = "bicubic"

    def __init__(self, weights: Path):
        self.weights = weights

    @classmethod
    def availability(cls, cfg):
        return Availability(True)

    @property
    def device(self) -> str:
        return "cpu"

    def weight_files(self):
        return [self.weights]

    def upscale(self, lr, settings, progress=None):
        raise NotImplementedError


@pytest.fixture
def fresh_hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(checksums, "_memo", {})
    calls = []
    real = checksums.file_sha256
    monkeypatch.setattr(checksums, "file_sha256", lambda path: calls.append(path) or real(path))
    return calls


def test_the_identity_follows_the_weights_bytes_not_their_name(tmp_path, fresh_hash_cache):
    weights = tmp_path / "noise_predictor.pth"
    weights.write_bytes(b"first training run")
    before = WeightedBackend(weights).identity
    assert before["weights"] == {"noise_predictor.pth": hashlib.sha256(b"first training run").hexdigest()}
    weights.write_bytes(b"trained some more")
    os.utime(weights, ns=(1, 1))  # a new mtime, as any rewrite gives
    after = WeightedBackend(weights).identity
    assert after["weights"]["noise_predictor.pth"] == hashlib.sha256(b"trained some more").hexdigest()
    assert {k: v for k, v in after.items() if k != "weights"} == {k: v for k, v in before.items() if k != "weights"}


def test_weights_are_hashed_once_across_processes(tmp_path, fresh_hash_cache, monkeypatch):
    weights = tmp_path / "model.bin"
    weights.write_bytes(os.urandom(4096))
    first = checksums.weights_sha256(weights)
    checksums.weights_sha256(weights)
    assert len(fresh_hash_cache) == 1
    monkeypatch.setattr(checksums, "_memo", {})  # a new process: only the cache file remembers
    assert checksums.weights_sha256(weights) == first and len(fresh_hash_cache) == 1
    assert (tmp_path / "cache" / "sr-studio" / "sha256.json").is_file()


def test_a_folder_of_weights_changes_with_any_file_in_it(tmp_path, fresh_hash_cache):
    sd = tmp_path / "sd-turbo"
    (sd / "unet").mkdir(parents=True)
    (sd / "unet" / "model.safetensors").write_bytes(b"unet")
    (sd / "vae.json").write_text("{}")
    first = checksums.weights_sha256(sd)
    (sd / "vae.json").write_text('{"scaling_factor": 0.2}')
    second = checksums.weights_sha256(sd)
    (sd / "extra.bin").write_bytes(b"x")
    assert len({first, second, checksums.weights_sha256(sd)}) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The CLI's run; its report (stderr) in ``stdout`` too."""
    done = subprocess.run([sys.executable, str(PROJECT_ROOT / "inference_invsr.py"), *args], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=300)
    done.stdout += done.stderr
    return done


def test_a_new_quality_redoes_a_jpeg_output(tmp_path):
    src = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(src)
    out = tmp_path / "out" / "x.jpg"
    first = run_cli("-i", str(src), "-o", str(out), "--backend", "bicubic", "--quality", "40")
    assert first.returncode == 0, first.stderr
    small = out.stat().st_size
    again = run_cli("-i", str(src), "-o", str(out), "--backend", "bicubic", "--quality", "40")
    assert "1 skipped" in again.stdout, again.stdout
    better = run_cli("-i", str(src), "-o", str(out), "--backend", "bicubic", "--quality", "95")
    assert "redone" in better.stdout and "quality" in better.stdout, better.stdout
    assert out.stat().st_size > small


def test_a_weight_flag_of_another_backend_is_refused():
    result = run_cli("-i", "in", "-o", "out", "--backend", "span", "--sd_path", "X")
    assert result.returncode == 2
    assert "--sd_path applies only to invsr, not span" in result.stderr
