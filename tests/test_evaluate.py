"""evaluate.py and utils/evaluation: data preparation, writers, resumable cache, paired and no-reference modes
and an end-to-end run through the command's main()."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import evaluate
from utils.evaluation import datasets, report, runner
from utils.evaluation.niqe import niqe

SET5 = datasets.DATASETS_ROOT / "Set5"


def _row(backend, config, psnr, lpips, **extra):
    return {"image": "a.png", "dataset": "D", "backend": backend, "config": config, "psnr": psnr, "ssim": 0.8,
            "lpips": lpips, "seconds": 0.5, "peak_rss_mb": 900.0, "rss_delta_mb": 50.0, "study": "ablation", **extra}


def test_modcrop_and_make_lr():
    hr = datasets.modcrop(np.zeros((103, 66, 3), np.uint8), 4)
    assert hr.shape == (100, 64, 3)
    assert datasets.make_lr(hr).shape == (25, 16, 3)


def test_csv_writer(tmp_path):
    rows = [_row("bicubic", "off", 30.0, 0.3, niqe=6.5), _row("x", "off", 28.0, 0.2, niqe=None, psnr_rgb=27.0,
                                                              ssim_rgb=0.7)]
    report.write_csv(rows, tmp_path / "m.csv")
    with open(tmp_path / "m.csv") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0])[:9] == ["image", "dataset", "backend", "config", "psnr", "ssim", "lpips", "niqe", "seconds"]
    assert "psnr_rgb" in read[0] and "study" not in read[0]
    assert float(read[1]["psnr"]) == 28.0 and read[0]["psnr_rgb"] == ""
    assert float(read[0]["niqe"]) == 6.5 and read[1]["niqe"] == ""  # None: too small for NIQE


def test_summary_table_means_and_deltas():
    rows = [_row("r", "off", 30.0, 0.2), _row("r", "off", 32.0, 0.4), _row("r", "color_fix=ycbcr", 30.5, 0.25)]
    lines = report.summary_table(rows).splitlines()
    assert lines[0].startswith("| backend | config | images | PSNR-Y")
    assert lines[2].split(" | ")[:6] == ["| r", "off", "2", "31.00", "0.8000", "0.3000"]
    cells = lines[3].split(" | ")
    assert cells[6:8] == ["-0.50", "-0.0500"] and cells[-1] == "900 (+50) |"


def test_summary_table_niqe_column_and_delta():
    rows = [_row("r", "off", 30.0, 0.2, niqe=6.0), _row("r", "off", 32.0, 0.4, niqe=7.0),
            _row("r", "edge", 30.5, 0.25, niqe=5.25)]
    lines = report.summary_table(rows).splitlines()
    header = lines[0].split(" | ")
    assert header[3:7] == ["PSNR-Y (dB) ↑", "SSIM-Y ↑", "LPIPS ↓", "NIQE ↓"]
    assert header[7:10] == ["ΔPSNR vs off", "ΔLPIPS vs off", "ΔNIQE vs off"]
    assert lines[2].split(" | ")[6] == "6.500"
    assert lines[3].split(" | ")[6:10] == ["5.250", "-0.50", "-0.0500", "-1.250"]


def test_report_writes_markdown_and_plots(tmp_path):
    rows = [_row("r", "off", 30.0, 0.2, niqe=6.0), _row("r", "color_fix=ycbcr", 29.0, 0.25, niqe=5.0)]
    report.write_report(rows, tmp_path / "docs" / "results.md", "python evaluate.py --x", "LPIPS alex")
    text = (tmp_path / "docs" / "results.md").read_text()
    assert "python evaluate.py --x" in text and "### D" in text and "| NIQE ↓ |" in text
    for name in ("ablation_metrics.png", "ablation_perception_distortion.png", "ablation_perception_distortion_niqe.png"):
        assert (tmp_path / "docs" / "plots" / name).stat().st_size > 0
        assert f"plots/{name})" in text


def test_cache_survives_a_truncated_line(tmp_path):
    cache = runner.ResultCache(tmp_path / "r.jsonl")
    cache.put("k1", {"psnr": 1.0})
    with open(tmp_path / "r.jsonl", "a") as fh:
        fh.write('{"key": "k2", "ps')  # killed mid-write
    again = runner.ResultCache(tmp_path / "r.jsonl")
    assert again.get("k1")["psnr"] == 1.0 and again.get("k2") is None


def _save(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _smooth_image(rng, shape) -> np.ndarray:
    """H×W×3 uint8 of blurred noise: natural enough for NIQE to score (finite features in every block)."""
    noise = rng.normal(size=(shape[0] // 4 + 2, shape[1] // 4 + 2, 3))
    up = np.asarray(Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
                    .resize((shape[1] + 8, shape[0] + 8), Image.BICUBIC))
    return up[4:4 + shape[0], 4:4 + shape[1]]


def test_paired_mode(tmp_path):
    rng = np.random.default_rng(0)
    a = _smooth_image(rng, (200, 208))
    b = _smooth_image(rng, (206, 200))
    c = _smooth_image(rng, (64, 72))
    for name, img in (("a", a), ("b", b), ("c", c)):
        _save(tmp_path / "hr" / f"{name}.png", img)
    _save(tmp_path / "sr" / "a.png", a)
    noisy = np.clip(b[:204].astype(int) + rng.integers(-20, 21, (204, 200, 3)), 0, 255).astype(np.uint8)
    _save(tmp_path / "sr" / "b.png", noisy)  # a tool that worked on the HR cropped to a multiple of 4
    _save(tmp_path / "sr" / "c.png", c)  # too small for NIQE's two 96×96 blocks
    out = tmp_path / "out"
    rows = evaluate.main(["--out", str(out), "--hr", str(tmp_path / "hr"), "--sr", str(tmp_path / "sr"),
                          "--name", "tool"])
    by_name = {r["image"]: r for r in rows}
    assert math.isinf(by_name["a.png"]["psnr"]) and by_name["a.png"]["lpips"] == pytest.approx(0, abs=1e-7)
    assert 15 < by_name["b.png"]["psnr"] < 40 and by_name["b.png"]["hr_height"] == 204
    assert {r["backend"] for r in rows} == {"tool"}
    # NIQE of the SR file as scored, with the --scale (4) border crop; noise makes b less natural than a.
    assert by_name["a.png"]["niqe"] == niqe(a, crop_border=4)
    assert by_name["b.png"]["niqe"] == niqe(noisy, crop_border=4) > by_name["a.png"]["niqe"]
    assert by_name["c.png"]["niqe"] is None
    with open(out / "metrics.csv") as fh:
        csv_niqe = {r["image"]: r["niqe"] for r in csv.DictReader(fh)}
    assert float(csv_niqe["b.png"]) == by_name["b.png"]["niqe"] and csv_niqe["c.png"] == ""
    for name in ("metrics.csv", "summary.md", "results.jsonl", "plots/paired_metrics.png",
                 "plots/paired_perception_distortion.png", "plots/paired_perception_distortion_niqe.png"):
        assert (out / name).is_file(), name


def test_no_reference_mode(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    images = {"x.png": _smooth_image(rng, (192, 200)), "y.png": _smooth_image(rng, (250, 196))}
    for name, img in images.items():
        _save(tmp_path / "sr" / name, img)
    monkeypatch.setattr(runner, "LPIPS", lambda *a: pytest.fail("no-reference mode needs no LPIPS model"))
    out = tmp_path / "out"
    argv = ["--out", str(out), "--sr", str(tmp_path / "sr"), "--scale", "2"]
    rows = evaluate.main(argv)
    assert [(r["image"], r["niqe"]) for r in rows] == [(n, niqe(img, crop_border=2)) for n, img in images.items()]
    assert all("psnr" not in r for r in rows) and {r["backend"] for r in rows} == {"sr"}
    with open(out / "metrics.csv") as fh:
        read = list(csv.DictReader(fh))
    assert [float(r["niqe"]) for r in read] == [r["niqe"] for r in rows] and read[0]["psnr"] == ""
    summary = (out / "summary.md").read_text()
    mean = (rows[0]["niqe"] + rows[1]["niqe"]) / 2
    assert "| backend | config | images | NIQE ↓ |" in summary and f"| sr | - | 2 | {mean:.3f} |" in summary
    assert (out / "plots" / "no-reference_metrics.png").is_file()
    assert not list((out / "plots").glob("*perception_distortion*"))  # no PSNR without ground truth

    # Resuming scores nothing again; an entry written before NIQE existed (no "niqe") is scored again.
    monkeypatch.setattr(runner, "niqe", lambda *a, **k: pytest.fail("cached results were recomputed"))
    assert evaluate.main(argv) == rows
    cache = out / "results.jsonl"
    entries = [json.loads(line) for line in cache.read_text().splitlines()]
    cache.write_text("".join(json.dumps({k: v for k, v in e.items() if k != "niqe"}) + "\n" for e in entries))
    monkeypatch.setattr(runner, "niqe", lambda img, crop_border, model: 1.5)
    assert [r["niqe"] for r in evaluate.main(argv)] == [1.5, 1.5]


def test_hr_without_sr_and_scale_without_sr_are_refused(capsys):
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--out", "o", "--hr", "h"])
    assert "--hr needs --sr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--out", "o", "--scale", "2"])
    assert "--scale is for scoring --sr results" in capsys.readouterr().err


def test_end_to_end_bicubic_on_two_set5_images(tmp_path, monkeypatch):
    out = tmp_path / "eval"
    argv = ["--out", str(out), "--datasets", str(SET5), "--limit", "2", "--backends", "bicubic"]
    rows = evaluate.main(argv)
    assert [r["image"] for r in rows] == sorted(p.name for p in SET5.iterdir())[:2]
    for r in rows:
        assert 25 < r["psnr"] < 40 and 0.6 < r["ssim"] < 1 and 0 < r["lpips"] < 1 and r["seconds"] > 0
        # A bicubic ×4 upscale is much less natural than its HR image (measured: 7.6 vs 3.3, 8.5 vs 5.3).
        hr_niqe = niqe(datasets.modcrop(datasets.load_rgb(SET5 / r["image"]), 4), crop_border=4)
        assert hr_niqe + 2 < r["niqe"] < 15
        assert (r["lr_width"] * 4, r["lr_height"] * 4) == (r["hr_width"], r["hr_height"])
    with open(out / "metrics.csv") as fh:
        assert [float(r["niqe"]) for r in csv.DictReader(fh)] == [r["niqe"] for r in rows]
    assert "| bicubic | off | 2 |" in (out / "summary.md").read_text()
    assert (out / "plots" / "backends_perception_distortion_niqe.png").is_file()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2

    # Resuming: everything is cached, so no backend may even be constructed.
    monkeypatch.setattr(runner, "load_backend", lambda *a: pytest.fail("cached results were recomputed"))
    again = evaluate.main(argv)
    assert [r["psnr"] for r in again] == [r["psnr"] for r in rows]
    assert json.loads((out / "results.jsonl").read_text().splitlines()[0])["backend"] == "bicubic"


def test_summary_table_without_variants_has_no_delta_columns():
    header = report.summary_table([_row("a", "off", 30.0, 0.2), _row("b", "off", 29.0, 0.1)]).splitlines()[0]
    assert "Δ" not in header.replace("(Δ)", "")


def test_summary_table_flags_a_stage_without_effect():
    rows = [_row("r", "off", 30.0, 0.2), _row("r", "edge", 30.0, 0.2)]
    assert "edge (output identical to off)" in report.summary_table(rows)


def test_documented_command_records_cpu_pinning(monkeypatch):
    monkeypatch.setattr(report.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(report.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    assert report.documented_command("evaluate.py", ["--out", "a b"]) == "taskset -c 1 python evaluate.py --out 'a b'"
    monkeypatch.setattr(report.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert report.documented_command("evaluate.py", []) == "python evaluate.py"
