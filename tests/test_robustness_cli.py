import os
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image

from tests.bad_inputs import EXPECTED, make_corpus
from tests.test_cli import ROOT, run_cli
from utils.batch.records import RECORDS_DIR, record_path


def test_every_bad_input_gets_a_result_or_one_clear_error(tmp_path):
    src = make_corpus(tmp_path / "in")
    out = tmp_path / "out"
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan")
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    for name, (kind, detail) in EXPECTED.items():
        stem = name.rsplit(".", 1)[0]
        if kind == "error":
            assert [line for line in errors if f"error: {name}: " in line and detail in line], name
            assert not (out / f"{stem}.png").exists()
        else:
            with Image.open(out / f"{stem}.png") as im:
                assert im.size == detail, name
    assert len(errors) == sum(kind == "error" for kind, _ in EXPECTED.values())
    assert "ok: animated.gif: GIF has 3 frames; only the first was used" in res.stderr
    # Colour and modes survive: the CMYK red stays red, the 16-bit input stays 16-bit, alpha stays.
    red = np.asarray(Image.open(out / "cmyk.png").convert("RGB"), np.float32).mean(axis=(0, 1))
    assert red[0] > 200 and red[1] < 40 and red[2] < 40
    assert Image.open(out / "deep16.png").mode.startswith("I;16") or \
        np.asarray(Image.open(out / "deep16.png")).dtype == np.uint16 or _is_16bit_png(out / "deep16.png")
    assert Image.open(out / "rgba.png").mode == "RGBA"
    assert Image.open(out / "gray_alpha.png").mode == "LA"
    # Nothing hidden but the resume records: no temp file is left behind.
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [RECORDS_DIR]


def _is_16bit_png(path) -> bool:
    return path.read_bytes()[24] == 16


def test_symlink_loop_and_empty_folder(tmp_path):
    src = tmp_path / "loop"
    src.mkdir()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(src / "a.png")
    (src / "again").symlink_to(src, target_is_directory=True)
    res = run_cli("-i", src, "-o", tmp_path / "out", "--backend", "bicubic", "-r")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [RECORDS_DIR, "a.png"]
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "readme.txt").write_text("no images here")
    res = run_cli("-i", tmp_path / "nothing", "-o", tmp_path / "out2", "--backend", "bicubic")
    assert res.returncode == 2 and "nothing: no images found in this folder" in res.stderr


def test_batch_killed_mid_run_leaves_no_partial_output_and_resumes(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(3)
    names = [f"img{i}.png" for i in range(8)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(src / name)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "inference_invsr.py"), "-i", str(src), "-o", str(out),
           "--backend", "realesrgan"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        assert proc.poll() is None, "the batch finished before it could be interrupted"
        assert time.monotonic() < deadline, "no output appeared within 300 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    finished = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert 1 <= len(finished) < len(names)
    # The record follows its output: a kill between the two leaves an output that is redone.
    recorded = [name for name in finished if record_path(out / name).is_file()]
    for name in finished:  # every visible output is complete
        assert (out / name).stat().st_size > 0
        with Image.open(out / name) as im:
            im.load()
            assert im.size == (160, 160)
    res = run_cli("-i", src, "-o", out, "--backend", "realesrgan")
    assert res.returncode == 0, res.stderr
    assert f"{len(names) - len(recorded)} written, {len(recorded)} skipped" in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [RECORDS_DIR, *names]  # stale temp files were cleaned up too
