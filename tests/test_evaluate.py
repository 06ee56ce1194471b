"""evaluate.py: data preparation, writers, resumable cache, paired mode and an end-to-end run."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate

SET5 = evaluate.DATASETS_ROOT / "Set5"


def _row(backend, config, psnr, lpips, **extra):
    return {"image": "a.png", "dataset": "D", "backend": backend, "config": config, "psnr": psnr, "ssim": 0.8,
            "lpips": lpips, "seconds": 0.5, "peak_rss_mb": 900.0, "rss_delta_mb": 50.0, "study": "ablation", **extra}


def test_modcrop_and_make_lr():
    hr = evaluate.modcrop(np.zeros((103, 66, 3), np.uint8), 4)
    assert hr.shape == (100, 64, 3)
    assert evaluate.make_lr(hr).shape == (25, 16, 3)


def test_csv_writer(tmp_path):
    rows = [_row("bicubic", "off", 30.0, 0.3), _row("x", "off", 28.0, 0.2, psnr_rgb=27.0, ssim_rgb=0.7)]
    evaluate.write_csv(rows, tmp_path / "m.csv")
    with open(tmp_path / "m.csv") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0])[:8] == ["image", "dataset", "backend", "config", "psnr", "ssim", "lpips", "seconds"]
    assert "psnr_rgb" in read[0] and "study" not in read[0]
    assert float(read[1]["psnr"]) == 28.0 and read[0]["psnr_rgb"] == ""


def test_summary_table_means_and_deltas():
    rows = [_row("r", "off", 30.0, 0.2), _row("r", "off", 32.0, 0.4), _row("r", "color_fix=ycbcr", 30.5, 0.25)]
    lines = evaluate.summary_table(rows).splitlines()
    assert lines[0].startswith("| backend | config | images | PSNR-Y")
    assert lines[2].split(" | ")[:6] == ["| r", "off", "2", "31.00", "0.8000", "0.3000"]
    cells = lines[3].split(" | ")
    assert cells[6:8] == ["-0.50", "-0.0500"] and cells[-1] == "900 (+50) |"


def test_report_writes_markdown_and_plots(tmp_path):
    rows = [_row("r", "off", 30.0, 0.2), _row("r", "color_fix=ycbcr", 29.0, 0.25)]
    evaluate.write_report(rows, tmp_path / "docs" / "results.md", "python evaluate.py --x", "LPIPS alex")
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "python evaluate.py --x" in text and "### D" in text
    assert (tmp_path / "docs" / "plots" / "ablation_metrics.png").stat().st_size > 0
    assert (tmp_path / "docs" / "plots" / "ablation_perception_distortion.png").stat().st_size > 0


def test_cache_survives_a_truncated_line(tmp_path):
    cache = evaluate.ResultCache(tmp_path / "r.jsonl")
    cache.put("k1", {"psnr": 1.0})
    with open(tmp_path / "r.jsonl", "a") as fh:
        fh.write('{"key": "k2", "ps')  # killed mid-write
    again = evaluate.ResultCache(tmp_path / "r.jsonl")
    assert again.get("k1")["psnr"] == 1.0 and again.get("k2") is None


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_paired_mode(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (64, 72, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (66, 48, 3), dtype=np.uint8)
    _save(tmp_path / "hr" / "a.png", a)
    _save(tmp_path / "hr" / "b.png", b)
    _save(tmp_path / "sr" / "a.png", a)
    noisy = np.clip(b[:64].astype(int) + rng.integers(-20, 21, (64, 48, 3)), 0, 255).astype(np.uint8)
    _save(tmp_path / "sr" / "b.png", noisy)  # a tool that worked on the HR cropped to a multiple of 4
    out = tmp_path / "out"
    rows = evaluate.main(["--out", str(out), "--hr", str(tmp_path / "hr"), "--sr", str(tmp_path / "sr"),
                          "--name", "tool"])
    by_name = {r["image"]: r for r in rows}
    assert math.isinf(by_name["a.png"]["psnr"]) and by_name["a.png"]["lpips"] == pytest.approx(0, abs=1e-7)
    assert 15 < by_name["b.png"]["psnr"] < 40 and by_name["b.png"]["hr_height"] == 64
    assert {r["backend"] for r in rows} == {"tool"}
    for name in ("metrics.csv", "summary.md", "results.jsonl", "plots/paired_metrics.png"):
        assert (out / name).is_file(), name


def test_end_to_end_bicubic_on_two_set5_images(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    argv = ["--out", str(out), "--datasets", str(SET5), "--limit", "2", "--backends", "bicubic"]
    rows = evaluate.main(argv)
    assert [r["image"] for r in rows] == sorted(p.name for p in SET5.iterdir())[:2]
    for r in rows:
        assert 25 < r["psnr"] < 40 and 0.6 < r["ssim"] < 1 and 0 < r["lpips"] < 1 and r["seconds"] > 0
        assert (r["lr_width"] * 4, r["lr_height"] * 4) == (r["hr_width"], r["hr_height"])
    with open(out / "metrics.csv") as fh:
        assert len(list(csv.DictReader(fh))) == 2
    assert "| bicubic | off | 2 |" in (out / "summary.md").read_text()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2

    # Resuming: everything is cached, so no backend may even be constructed.
    monkeypatch.setattr(evaluate, "create_backend", lambda *a: pytest.fail("cached results were recomputed"))
    again = evaluate.main(argv)
    assert [r["psnr"] for r in again] == [r["psnr"] for r in rows]
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["backend"] == "bicubic"


def test_summary_table_without_variants_has_no_delta_columns():
    header = evaluate.summary_table([_row("a", "off", 30.0, 0.2), _row("b", "off", 29.0, 0.1)]).splitlines()[0]
    assert "Δ" not in header.replace("(Δ)", "")


def test_summary_table_flags_a_stage_without_effect():
    rows = [_row("r", "off", 30.0, 0.2), _row("r", "edge", 30.0, 0.2)]
    assert "edge (output identical to off)" in evaluate.summary_table(rows)


def test_documented_command_records_cpu_pinning(monkeypatch):
    monkeypatch.setattr(evaluate.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(evaluate.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert evaluate.documented_command("evaluate.py", ["--out", "a b"]) == "taskset -c 1 python evaluate.py --out 'a b'"
    monkeypatch.setattr(evaluate.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert evaluate.documented_command("evaluate.py", []) == "python evaluate.py"
