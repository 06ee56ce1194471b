import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "inference_invsr.py"), *map(str, args)],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def make_folder(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ["a.png", "b.jpg"]:
        Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(folder / name)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return folder


def test_folder_with_a_corrupt_file(tmp_path):
    src = make_folder(tmp_path / "in")
    out = tmp_path / "out"
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan")
    assert res.returncode == 1, res.stderr
    assert sorted(p.name for p in out.iterdir()) == [".sr-records", "a.png", "b.png"]
    for name in ["a.png", "b.png"]:
        with Image.open(out / name) as im:
            assert im.size == (64, 48)
    assert "error: broken.png: not a readable image" in res.stderr
    assert "Traceback" not in res.stderr
    assert "2 written, 0 skipped (same input and settings), 1 failed" in res.stderr
    # A rerun resumes: finished files are skipped, the bad one fails again.
    before = (out / "a.png").stat().st_mtime_ns
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan")
    assert res.returncode == 1 and "0 written, 2 skipped" in res.stderr
    assert (out / "a.png").stat().st_mtime_ns == before
    # The inputs are untouched.
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "b.jpg", "broken.png"]


def test_rerun_redoes_exactly_what_changed(tmp_path):
    """Settings-aware resume: a changed setting or input is redone and says why; the same run skips."""
    src = make_folder(tmp_path / "in")
    (src / "broken.png").unlink()
    out = tmp_path / "out"
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "none")
    assert res.returncode == 0 and "2 written, 0 skipped" in res.stderr, res.stderr
    plain = {n: (out / n).read_bytes() for n in ("a.png", "b.png")}
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "wavelet")
    assert res.returncode == 0 and "2 written, 0 skipped" in res.stderr, res.stderr
    assert res.stderr.count("redone: settings changed (color_fix)") == 2
    assert all((out / n).read_bytes() != data for n, data in plain.items())  # the outputs changed
    fixed = (out / "a.png").stat().st_mtime_ns
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "wavelet")
    assert res.returncode == 0 and "0 written, 2 skipped" in res.stderr, res.stderr
    assert (out / "a.png").stat().st_mtime_ns == fixed
    # A changed input is redone even though its name and the settings are the same.
    Image.fromarray(np.zeros((12, 16, 3), np.uint8)).save(src / "a.png")
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "wavelet")
    assert "a.png: redone: input changed" in res.stderr and "1 written, 1 skipped" in res.stderr, res.stderr
    # An output without a record (made by something else) is redone, not trusted.
    (out / ".sr-records" / "b.png.json").unlink()
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "wavelet")
    assert "b.jpg: redone: no record of how it was made" in res.stderr and "1 written, 1 skipped" in res.stderr
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan", "--color_fix", "wavelet", "--overwrite")
    assert res.stderr.count("redone: overwrite") == 2 and "2 written" in res.stderr


def test_num_steps_replaces_the_yaml_timesteps(tmp_path):
    """A flag the user set wins over the YAML: --num_steps clears a config's explicit timesteps."""
    import inference_invsr
    from utils.config import load_config, with_overrides
    from utils.settings import RunSettings

    yaml = tmp_path / "cfg.yaml"
    from omegaconf import OmegaConf
    OmegaConf.save(with_overrides(load_config(), {"timesteps": [300, 100]}), yaml)
    args = inference_invsr.build_parser().parse_args(["-i", "x", "-o", "y", "--cfg_path", str(yaml), "--num_steps", "3"])
    cfg = with_overrides(load_config(yaml), inference_invsr.user_overrides(args, inference_invsr.given_flags(args, "invsr")))
    assert RunSettings.from_config(cfg, "invsr").timesteps == (200, 100, 50)
    args = inference_invsr.build_parser().parse_args(["-i", "x", "-o", "y", "--cfg_path", str(yaml)])
    cfg = with_overrides(load_config(yaml), inference_invsr.user_overrides(args, inference_invsr.given_flags(args, "invsr")))
    assert RunSettings.from_config(cfg, "invsr").timesteps == (300, 100)


def test_single_file_outscale_and_format(tmp_path):
    src = make_folder(tmp_path / "in") / "a.png"
    res = run_cli("-i", src, "-o", tmp_path / "o", "--backend", "bicubic", "--outscale", "2", "--format", "webp")
    assert res.returncode == 0, res.stderr
    with Image.open(tmp_path / "o" / "a.webp") as im:
        assert im.size == (32, 24) and im.format == "WEBP"
    res = run_cli("-i", src, "-o", tmp_path / "named.jpg", "--backend", "bicubic")
    assert res.returncode == 0 and Image.open(tmp_path / "named.jpg").size == (64, 48)


def test_clear_errors_for_bad_arguments(tmp_path):
    res = run_cli("-i", tmp_path, "-o", tmp_path / "o", "--timesteps", "100,200")
    assert res.returncode == 2 and "strictly descending" in res.stderr
    res = run_cli("-i", tmp_path / "nothing", "-o", tmp_path / "o", "--backend", "bicubic")
    assert res.returncode == 2 and "nothing: file not found" in res.stderr
    (tmp_path / "empty").mkdir()
    res = run_cli("-i", tmp_path / "empty", "-o", tmp_path / "o", "--backend", "bicubic")
    assert res.returncode == 2 and "no images found" in res.stderr
    res = run_cli("-i", tmp_path, "-o", tmp_path / "o", "--outscale", "7")
    assert res.returncode == 2 and "outscale must be between 1 and 4" in res.stderr
    assert "Traceback" not in res.stderr


def invsr_cli(tmp_path, *extra):
    src = make_folder(tmp_path / "in")
    cmd = [sys.executable, str(ROOT / "inference_invsr.py"), "-i", str(src), "-o", str(tmp_path / "out"),
           "--backend", "invsr", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and not (tmp_path / "out").exists()
    return errors[0]


def test_invsr_offline_without_weights_is_one_clear_error(tmp_path):
    if any((ROOT / "weights").glob("noise_predictor*")):
        pytest.fail("weights/ holds InvSR weights; this test needs a machine without them")
    error = invsr_cli(tmp_path)
    for text in ("SD-Turbo weights", "noise predictor", "--sd_path", "--started_ckpt_path",
                 "scripts/download_weights.py", "cannot download: HF_HUB_OFFLINE is set"):
        assert text in error


def test_invsr_with_a_wrong_explicit_path_names_it(tmp_path):
    error = invsr_cli(tmp_path, "--sd_path", tmp_path / "none", "--started_ckpt_path", tmp_path / "np.pth")
    assert f"--sd_path {tmp_path / 'none'}: no such directory" in error
    assert error.count("no such directory") == 1


# ---- issue 12: settings that do not apply, bad values named by their flag, --quality, help ----------

def cli_error(capsys, *args) -> str:
    """Run the CLI in-process with arguments that must be refused before any work: its one error line."""
    import inference_invsr

    with pytest.raises(SystemExit) as stop:
        inference_invsr.main(["-i", "in.png", "-o", "out", *map(str, args)])
    assert stop.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0].split("error: ", 1)[1]


@pytest.mark.parametrize("args, message", [
    (["--backend", "realesrgan", "--num_steps", "2"], "--num_steps applies only to invsr, not realesrgan"),
    (["--backend", "span", "--seed", "3", "--timesteps", "200,100"],
     "--seed applies only to invsr, not span; --timesteps applies only to invsr, not span"),
    (["--backend", "invsr", "--overlap", "8"], "--overlap applies only to realesrgan, span, realesrgan-anime, "
                                               "waifu2x, bicubic and custom, not invsr"),
    (["--backend", "span", "--denoise", "2"], "--denoise applies only to waifu2x, not span"),
    (["--backend", "bicubic", "--attention_fusion"], "--attention_fusion applies only to invsr, realesrgan, span, "
                                                     "realesrgan-anime, waifu2x and custom, not bicubic"),
])
def test_a_setting_the_backend_does_not_use_is_refused(capsys, args, message):
    assert cli_error(capsys, *args).startswith(message)


def test_auto_says_which_backend_it_chose_when_refusing(capsys):
    if any((ROOT / "weights").glob("noise_predictor*")):
        pytest.fail("weights/ holds InvSR weights; this test needs a machine without them")
    assert cli_error(capsys, "--num_steps", "3") == \
        "--num_steps applies only to invsr, not realesrgan (--backend auto chose realesrgan here)"


@pytest.mark.parametrize("args, message", [
    (["--chopping_size", "7"],
     "argument --tile_size: realesrgan.tile_size must be null (the model's default) or an integer ≥ 16 (got 7)"),
    (["--backend", "invsr", "--tile_size", "100"],
     "argument --tile_size: basesr.chopping.pch_size must be null (the model's default) or an integer ≥ 16 and a "
     "multiple of 8 (got 100)"),
    (["--backend", "span", "--overlap", "-1"], "argument --overlap: span.tile_margin must be null"),
    (["--outscale", "7"], "argument --outscale: outscale must be between 1 and 4 (got 7.0)"),
    (["--quality", "0"], "argument --quality: output.quality must be an integer from 1 to 100 (got 0)"),
    (["--backend", "waifu2x", "--denoise", "9"], "argument --denoise: waifu2x.denoise must be -1 (off), 0, 1, 2 or 3"),
    (["--smart_chopping", "--min_overlap", "0.7"], "argument --min_overlap: smart chopping overlaps must satisfy"),
    (["--edge_enhancement", "2"], "argument --edge_enhancement: postprocess.edge_enhancement (strength) must be in"),
    (["--backend", "realesrgan", "--runtime", "ncnn", "--precision", "bfloat16"],
     "argument --precision: precision bfloat16: realesrgan on ncnn runs float32 only"),
    (["--backend", "bicubic", "--runtime", "openvino"], "argument --runtime: runtime openvino cannot run bicubic"),
    (["--backend", "invsr", "--runtime", "torch", "--precision", "float16"],
     "argument --precision: precision float16 is not supported by torch on cpu"),
])
def test_a_bad_value_stops_before_any_work_naming_the_flag(capsys, tmp_path, args, message):
    assert cli_error(capsys, *args).startswith(message)


def test_quality_tile_size_and_overlap_reach_the_run(tmp_path):
    import inference_invsr

    src = tmp_path / "c.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(src)
    sizes = {}
    for quality in (20, 95):
        out = tmp_path / f"q{quality}"
        assert inference_invsr.main(["-i", str(src), "-o", str(out), "--backend", "span", "--format", "jpeg",
                                     "--quality", str(quality)]) == 0
        sizes[quality] = (out / "c.jpg").stat().st_size
    assert sizes[20] < sizes[95]
    whole, tiled = tmp_path / "whole.png", tmp_path / "tiled.png"
    for out, tiling in ((whole, []), (tiled, ["--tile_size", "16", "--overlap", "0"])):
        assert inference_invsr.main(["-i", str(src), "-o", str(out), "--backend", "span", "--color_fix", "none",
                                     *tiling]) == 0
    assert np.abs(np.asarray(Image.open(whole), float) - np.asarray(Image.open(tiled), float)).max() > 0


def test_help_shows_examples_and_defaults():
    import inference_invsr
    from utils.config import load_config

    cfg = load_config()
    text = inference_invsr.build_parser().format_help()
    assert "examples:" in text and "--backend span --outscale 2" in text
    for default in (f"default {cfg.outscale:g}", f"default {cfg.output.quality}", f"default {cfg.color_fix}",
                    "realesrgan 448", "invsr 128"):
        assert default in text, default


def test_the_command_line_does_not_import_diffusers_until_invsr_runs():
    """diffusers costs ~7 s to import on this CPU; a Real-ESRGAN run (or -h) must not pay for it."""
    probe = "import sys, inference_invsr; print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
