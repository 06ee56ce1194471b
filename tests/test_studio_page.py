"""The studio page's logic without a browser: cost estimates against the tiles the backends really run,
the time-left line, presets, the model picker's words, and the page's handlers (settings restored,
controls disabled with a reason, a failed run keeping the previous result, comparing two runs)."""
from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest
import torch
from PIL import Image
from tiny_sd import tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)

from utils.backends import BACKENDS, Availability, backend_status, load_backend
from utils.config import with_overrides
from utils.settings import RunSettings
from utils.studio import estimates
from utils.studio.catalog import NAMES, label, models_markdown, unavailable_line
from utils.studio.estimates import Eta, duration, estimate
from utils.studio.presets import PRESETS
from utils.studio.service import Studio
from utils.studio.settings import Settings, config_for
from utils.studio.ui import Page, applies_to, settings_panel


def tiles_run(backend, lr: torch.Tensor, run: RunSettings) -> int:
    """How many tiles ``backend`` really processes: the total its progress callback reports."""
    totals = []
    backend.upscale(lr, run, lambda done, total: totals.append(total))
    return totals[-1]


def run_settings(cfg, backend: str, **settings) -> RunSettings:
    s = Settings.defaults(cfg, backend).replace(backend=backend, **settings)
    return RunSettings.from_config(config_for(cfg, s.applicable(), backend), backend)


@pytest.mark.parametrize("backend, h, w, tiling", [
    ("span", 96, 80, dict(tile_size=32, overlap=8)), ("span", 96, 80, dict(tile_size=32, overlap=22)),
    ("span", 40, 200, dict(tile_size=48, overlap=0)), ("bicubic", 300, 90, dict(tile_size=64, overlap=2)),
    ("span", 64, 64, dict(tile_size=512))])
def test_the_estimate_counts_the_tiles_the_backend_runs(cfg, backend, h, w, tiling):
    run = run_settings(cfg, backend, color_fix="none", **tiling)
    planned = estimate(h, w, run)
    assert planned.tiles[0] == planned.tiles[1] == tiles_run(load_backend(backend, cfg), torch.rand(1, 3, h, w), run)
    assert planned.seconds > 0


def test_smart_chopping_estimates_a_range_holding_the_real_count(cfg):
    run = run_settings(cfg, "span", tile_size=32, overlap=4, smart_chopping=True, min_overlap=0.2, max_overlap=0.55)
    for lr in (torch.zeros(1, 3, 120, 120), torch.rand(1, 3, 120, 120)):  # flat: least overlap; noise: most
        low, high = estimate(120, 120, run).tiles
        assert low < high and low <= tiles_run(load_backend("span", cfg), lr, run) <= high


def test_invsr_estimate_counts_its_patches(tiny_cfg):  # noqa: F811 (fixture)
    run = RunSettings.from_config(with_overrides(tiny_cfg, {"num_steps": 2}), "invsr")
    backend = load_backend("invsr", tiny_cfg)
    for h, w in ((40, 24), (8, 12)):  # several patches; smaller than one patch (padded)
        assert estimate(h, w, run).tiles[0] == tiles_run(backend, torch.rand(1, 3, h, w), run)
    one, two = (estimate(40, 24, RunSettings.from_config(with_overrides(tiny_cfg, {"num_steps": n}), "invsr"))
                for n in (1, 2))
    assert two.seconds - one.seconds == pytest.approx(one.tiles[0] * estimates.INVSR_STEP_SECONDS * (16 / 128) ** 2
                                                      * estimates.PIPELINE_OVERHEAD)


def test_every_tiled_backend_and_scale_has_a_measured_throughput():
    for name, cls in BACKENDS.items():
        if name != "invsr":
            assert all((name, scale) in estimates.SECONDS_PER_MEGAPIXEL for scale in cls.scales), name


def test_duration_and_time_left(monkeypatch):
    assert [duration(s) for s in (0.4, 12.3, 95, 7300)] == ["< 1 s", "12 s", "1 min 35 s", "2 h 1 min"]
    clock = SimpleNamespace(now=100.0)
    monkeypatch.setattr(estimates.time, "monotonic", lambda: clock.now)
    eta = Eta(2, estimate_seconds=30)
    assert eta.text(0, 0, 4) == "< 1 s elapsed · ≈ 30 s left (estimate)"
    clock.now += 10  # a quarter of the job (image 1 of 2, half its tiles) in 10 s
    assert eta.text(0, 2, 4) == "10 s elapsed · ≈ 30 s left"
    assert Eta(3).text(0, 0, 1) == "< 1 s elapsed · time left: after the first tile"


def test_every_backend_has_a_picker_name_and_a_one_line_reason(cfg):
    assert set(NAMES) == set(BACKENDS)
    assert label("span") == "SPAN — faithful, fast"
    down = Availability(False, "a; b\nc")
    line = unavailable_line("invsr", down)
    assert line.startswith("InvSR is not available here:") and "download_weights.py" in line and "\n" not in line
    assert unavailable_line("span", Availability(False, "ncnn missing")) == "SPAN is not available here: ncnn missing"
    lines, details = models_markdown({**backend_status(cfg), "span": Availability(False, "ncnn missing")})
    assert lines.count("\n") == len(BACKENDS) - 1 and "✗ **SPAN — faithful, fast** — SPAN is not" in lines
    assert "Why not here: ncnn missing" in details
    assert "✓ **waifu2x — photos with JPEG noise, with denoise** — runs on ncnn float32 here" in lines


@pytest.mark.parametrize("missing", [(), ("invsr",), ("invsr", "span", "realesrgan")])
def test_presets_pick_a_backend_that_runs_here_with_valid_settings(cfg, missing):
    status = {name: Availability(name not in missing, "missing") for name in BACKENDS}
    current = Settings.defaults(cfg, "realesrgan").replace(outscale=2.0, format="webp", smart_chopping=True)
    for preset in PRESETS:
        chosen, note = preset.apply(cfg, current, status)
        assert status[chosen.backend].ok and chosen.backend == next(b for b, _ in preset.choices if status[b].ok)
        assert (chosen.outscale, chosen.format) == (2.0, "webp")  # what a preset does not name is kept
        assert not chosen.smart_chopping and chosen.tile_size == Settings.defaults(cfg, chosen.backend).tile_size
        RunSettings.from_config(config_for(cfg, chosen.applicable(), chosen.backend), chosen.backend)
        assert ("cannot run here" in note) == (chosen.backend != preset.choices[0][0])
    fast, _ = PRESETS[0].apply(cfg, current, status)
    assert (fast.backend, fast.color_fix) == ("bicubic" if "span" in missing else "span", "none")


# ---- the page's handlers ----------------------------------------------------------------------------

@pytest.fixture
def page(cfg, tmp_path):
    (tmp_path / "tmp").mkdir()
    studio = Studio(cfg, "realesrgan", tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    with gr.Blocks():
        controls, _, _ = settings_panel(Settings.defaults(cfg, "realesrgan"))
    return Page(studio, controls)


def test_settings_saved_in_the_browser_are_restored(page, cfg):
    values = dict(zip(page.keys, page.restore(None)))
    assert values == vars(Settings.defaults(cfg, "realesrgan"))
    saved = {"backend": "span", "tile_size": 64, "overlap": 5, "color_fix": "none", "stale_key": 1}
    values = dict(zip(page.keys, page.restore(saved)))
    assert (values["backend"], values["tile_size"], values["overlap"], values["color_fix"]) == ("span", 64, 5, "none")
    assert dict(zip(page.keys, page.restore({"backend": "gone"})))["backend"] == "realesrgan"


def test_controls_a_backend_does_not_use_are_disabled_with_the_reason(page):
    keys = list(applies_to())
    note, *updates = page.backend_view("bicubic")
    view = dict(zip(keys, updates))
    assert not view["num_steps"]["interactive"] and view["num_steps"]["info"] == "InvSR only"
    assert not view["attention_fusion"]["interactive"] and view["attention_fusion"]["value"] is False
    assert view["overlap"]["interactive"]
    note, *updates = page.backend_view("invsr")
    view = dict(zip(keys, updates))
    assert view["num_steps"]["interactive"] and not view["overlap"]["interactive"]
    if not page.status["invsr"].ok:
        assert note == "✗ " + unavailable_line("invsr", page.status["invsr"])


def test_review_gives_the_cost_or_why_not(page, cfg, tmp_path):
    Image.new("RGB", (120, 80)).save(tmp_path / "in.png")
    values = vars(Settings.defaults(cfg, "span").replace(tile_size=32, overlap=8))
    text, saved = page.review(str(tmp_path / "in.png"), **values)
    planned = estimate(80, 120, run_settings(cfg, "span", tile_size=32, overlap=8))
    assert text == f"{planned.text()} on this machine for this 120×80 image" and saved == values
    text, _ = page.review(None, **{**values, "outscale": "7"})
    assert text == "⚠ outscale must be between 1 and 4 (got 7.0)"
    text, _ = page.review(None, **{**values, "backend": "invsr", "tile_size": 128})
    # Priced without the weights; from 512×512 up InvSR takes 256-pixel patches, as its reference does.
    assert text.startswith("≈ 9 tiles of 256×256 px") and text.endswith("for a 512×512 image")


def test_a_failed_run_keeps_the_previous_result_and_runs_can_be_compared(page, cfg, tmp_path):
    request, progress = SimpleNamespace(session_hash="s"), lambda *a, **k: None
    Image.new("RGB", (16, 12), (200, 30, 30)).save(tmp_path / "a.png")
    values = vars(Settings.defaults(cfg, "bicubic").replace(color_fix="none"))
    pair, result, info, runs, shown, gallery = page.run_single(str(tmp_path / "a.png"), "bicubic", [], request,
                                                               progress, **values)
    assert result.endswith("a_bicubic_x4.png") and info.startswith("bicubic ×4") and len(runs) == 1
    assert pair["value"] == (runs[0]["bicubic"], result) and gallery == [(result, runs[0]["caption"])]

    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = page.run_single(str(tmp_path / "broken.png"), "bicubic", runs, request, progress, **values)
    assert out[2].startswith("⚠ broken.png: not a readable image") and "previous result is kept" in out[2]
    assert all(o == gr.skip() for i, o in enumerate(out) if i != 2)  # slider, download, history untouched

    _, second, _, runs, _, _ = page.run_single(str(tmp_path / "a.png"), "previous run", runs, request, progress,
                                               **{**values, "outscale": 2.0})
    compared = page.comparison(runs, 0, "previous run")
    before, after = compared["value"]
    assert after == second and "Previous run (Bicubic ×4) ↔ this run (Bicubic ×2)" == compared["label"]
    assert Image.open(before).size == Image.open(second).size == (32, 24)  # the ×4 run resized to compare
    assert page.comparison(runs, 1, "previous run")["label"].endswith("(no run before this one)")
