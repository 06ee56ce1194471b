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
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]
    for name in ["a.png", "b.png"]:
        with Image.open(out / name) as im:
            assert im.size == (64, 48)
    assert "error: broken.png: not a readable image" in res.stderr
    assert "Traceback" not in res.stderr
    assert "2 written, 0 skipped (output exists), 1 failed" in res.stderr
    # A rerun resumes: finished files are skipped, the bad one fails again.
    before = (out / "a.png").stat().st_mtime_ns
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan")
    assert res.returncode == 1 and "0 written, 2 skipped" in res.stderr
    assert (out / "a.png").stat().st_mtime_ns == before
    # The inputs are untouched.
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "b.jpg", "broken.png"]


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
