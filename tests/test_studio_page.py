"""The studio page's logic without a browser: cost estimates against the tiles the backends really run,
the time-left line, presets, the model picker's words, and the page's handlers (settings restored,
controls disabled with a reason, a failed run keeping the previous result, comparing two runs)."""
from __future__ import annotations

from pathlib import Path
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
from utils.studio.estimates import duration, estimate
from utils.studio.presets import PRESETS
from utils.studio.service import Studio
from utils.studio.settings import Settings, config_for
from utils.studio.progress import ProgressLine, ticking
from utils.studio.ui import SINGLE_OUTPUTS, Page, applies_to, settings_panel


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The models' timings go to this test's cache folder, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


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
        if name not in ("invsr", "custom"):  # a user's model: derived from its parameter count
            assert all((name, scale) in estimates.SECONDS_PER_MEGAPIXEL for scale in cls.scales), name


def test_duration_and_the_live_progress_line():
    assert [duration(s) for s in (0.4, 12.3, 95, 7300)] == ["< 1 s", "12 s", "1 min 35 s", "2 h 1 min"]
    clock = SimpleNamespace(now=100.0)
    line = ProgressLine(clock=lambda: clock.now)
    line.begin(2, estimate_seconds=30)
    assert line.text() == "< 1 s elapsed · ≈ 30 s left (estimate) · 0 %"
    clock.now += 3  # the clock ticks inside the first tile: elapsed and the estimate follow it
    assert line.text() == "3 s elapsed · ≈ 27 s left (estimate) · 0 %"
    clock.now += 7
    line.report(0, 2, 4)  # a quarter of the job (image 1 of 2, half its tiles) in 10 s: 30 s to go
    assert line.text() == "tile 2/4 · 10 s elapsed · ≈ 30 s left · 25 %"
    clock.now += 5  # no report for 5 s: the time left counts down
    assert line.text() == "tile 2/4 · 15 s elapsed · ≈ 25 s left · 25 %"
    line.report(1, 4, 4)  # every tile done, the result not written yet: never 100 % here
    assert line.text().endswith("finishing · 99 %")
    line.stop.set()
    assert line.text().startswith("Cancelling after the current tile · ")
    assert line.done_text() == "✓ done in 15 s · 100 %"
    fresh = ProgressLine(clock=lambda: clock.now)
    fresh.begin(3)
    assert fresh.text() == "< 1 s elapsed · time left: after the first tile · 0 %"


def test_ticking_redraws_while_the_work_runs_and_returns_its_result():
    import threading
    release, line = threading.Event(), ProgressLine()
    frames = ticking(lambda: release.wait(5) and "result", line, lambda text: ("frame", text), tick=0.05)
    seen = [next(frames) for _ in range(3)]  # three redraws while the work is blocked
    assert all(f[0] == "frame" and "elapsed" in f[1] for f in seen)
    release.set()
    with pytest.raises(StopIteration) as stop:
        while True:
            next(frames)
    assert stop.value.value == "result"


def test_every_backend_has_a_picker_name_and_a_one_line_reason(cfg):
    assert set(NAMES) == set(BACKENDS)
    assert label("span") == "SPAN — faithful, fast"
    down = Availability(False, "a; b\nc")
    line = unavailable_line("invsr", down)
    assert line.startswith("InvSR is not available here:") and "download_weights.py" in line and "\n" not in line
    assert unavailable_line("span", Availability(False, "ncnn missing")) == "SPAN is not available here: ncnn missing"
    lines, details = models_markdown({**backend_status(cfg), "span": Availability(False, "ncnn missing")})
    assert lines.count("\n") == len(BACKENDS) - 2 and "✗ **SPAN — faithful, fast** — SPAN is not" in lines
    assert "Why not here: ncnn missing" in details
    assert "✓ **Bicubic — plain interpolation, the baseline** — runs on torch float32 here" in lines
    assert "Your model" not in lines  # users' files have their own list, with architecture and scale


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
    text, saved = page.review(str(tmp_path / "in.png"), {}, **values)
    planned = estimate(80, 120, run_settings(cfg, "span", tile_size=32, overlap=8))
    assert text == f"{planned.text()} on this machine for this 120×80 image" and saved == values
    text, _ = page.review(None, {}, **{**values, "outscale": "7"})
    assert text == "⚠ Scale must be between 1 and 4 (got 7.0)"
    text, _ = page.review(None, {}, **{**values, "backend": "invsr", "tile_size": 128})
    # Priced without the weights; from 512×512 up InvSR takes 256-pixel patches, as its reference does.
    assert text.startswith("≈ 9 tiles (tile size 256 px, patches overlapping by half), ")
    assert text.endswith("(not timed here yet) on this machine for a 512×512 image")
    # On the Batch tab the line prices one image of the assumed size, not the single image's upload.
    text, _ = page.review(str(tmp_path / "in.png"), {}, "batch", **values)
    assert text.endswith("on this machine for a 512×512 image, per image of that size")


def last(frames) -> dict:
    """The final outputs of a page event written as a generator, by name."""
    *_, final = frames
    return dict(zip(SINGLE_OUTPUTS, final))


def run_page(page, image, runs, compare_with="bicubic", refused=None, **values) -> dict:
    return last(page.run_single(str(image), compare_with, runs, refused or {}, SimpleNamespace(session_hash="s"),
                                **values))


def test_a_failed_run_keeps_the_previous_result_and_runs_compare_only_with_the_same_input(page, cfg, tmp_path):
    Image.new("RGB", (16, 12), (200, 30, 30)).save(tmp_path / "a.png")
    Image.new("RGB", (16, 12), (20, 30, 200)).save(tmp_path / "b.png")
    values = vars(Settings.defaults(cfg, "bicubic").replace(color_fix="none"))
    out = run_page(page, tmp_path / "a.png", [], **values)
    runs, result = out["runs"], out["download"]
    assert result.endswith("a_bicubic_x4.png") and out["info"].startswith("bicubic ×4") and len(runs) == 1
    assert out["slider"]["value"] == (runs[0]["bicubic"], result)
    assert out["history"]["value"] == [(result, runs[0]["caption"])] and out["progress"].endswith("· 100 %")
    assert not out["compare_with"]["interactive"]  # one run of this image: nothing to compare with yet

    (tmp_path / "broken.png").write_bytes(b"not an image")
    out = run_page(page, tmp_path / "broken.png", runs, **values)
    assert out["info"].startswith("⚠ broken.png: not a readable image") and "previous result is kept" in out["info"]
    assert all(out[k] == gr.skip() for k in ("slider", "download", "runs", "history"))

    out = run_page(page, tmp_path / "a.png", runs, "previous run", **{**values, "outscale": 2.0})
    second, runs = out["download"], out["runs"]
    assert out["compare_with"]["interactive"]
    before, after = out["slider"]["value"]
    assert after == second and out["slider"]["label"] == "Previous run (Bicubic ×4) ↔ this run (Bicubic ×2)"
    assert Image.open(before).size == Image.open(second).size == (32, 24)  # the ×4 run resized to compare
    assert out["info"].startswith("bicubic ×4 → resized to ×2 ")  # the model's scale and the one written
    # A different image: never compared with a.png's runs, and the choice is off, saying why.
    out = run_page(page, tmp_path / "b.png", runs, "previous run", **values)
    assert out["slider"]["label"] == "Bicubic ↔ result" and not out["compare_with"]["interactive"]
    assert "only for an image run twice" in out["compare_with"]["info"]
    assert page.comparison(out["runs"], 0, "previous run")["label"] == "Bicubic ↔ result"


def test_a_new_input_clears_the_result_area_and_a_history_entry_brings_its_input_back(page, cfg, tmp_path):
    Image.new("RGB", (16, 12), (200, 30, 30)).save(tmp_path / "a.png")
    runs = run_page(page, tmp_path / "a.png", [], **vars(Settings.defaults(cfg, "bicubic")))["runs"]
    *cleared, zoom = page.new_input(str(tmp_path / "b.png"))
    cleared = dict(zip(SINGLE_OUTPUTS, cleared))
    assert cleared["slider"]["value"] is None and cleared["download"] is None and cleared["info"] == ""
    assert cleared["result_area"]["visible"] is False and cleared["shown"] is None and zoom["value"] is None
    *shown, image = page.pick_run(runs, "bicubic", SimpleNamespace(index=0))
    shown = dict(zip(SINGLE_OUTPUTS, shown))
    assert image == str(tmp_path / "a.png") and shown["download"] == runs[0]["result"]
    assert shown["result_area"]["visible"] and shown["info"] == runs[0]["info"]


def test_the_history_survives_a_reload_while_its_files_exist(page, cfg, tmp_path):
    Image.new("RGB", (16, 12)).save(tmp_path / "a.png")
    runs = run_page(page, tmp_path / "a.png", [], **vars(Settings.defaults(cfg, "bicubic")))["runs"]
    caption = runs[0]["caption"]
    assert caption.startswith("Bicubic ×4 · tile size 1024, overlap 2 · colour fix") and "…" not in caption
    restored, view = page.restore_runs(runs + [{"result": "/nowhere.png"}, "junk"])
    assert restored == runs and view["visible"]
    Path(runs[0]["result"]).unlink()
    assert page.restore_runs(runs)[0] == [] and page.restore_runs(None)[0] == []


def test_a_value_typed_out_of_range_is_refused_in_the_controls_words(page, cfg, tmp_path):
    refused = page.typed("tile_size", 10, {})
    assert refused == {"tile_size": ("Tile size must be from 16 to 1024 px (got 10)", 16)}
    clamped = vars(Settings.defaults(cfg, "span").replace(tile_size=16))  # what the browser makes of it
    text, _ = page.review(None, refused, **clamped)
    assert text == "⚠ Tile size must be from 16 to 1024 px (got 10)"
    Image.new("RGB", (16, 12)).save(tmp_path / "a.png")
    out = run_page(page, tmp_path / "a.png", [], refused=refused, **{**clamped, "backend": "bicubic"})
    assert out["info"] == "⚠ Tile size must be from 16 to 1024 px (got 10)" and out["download"] == gr.skip()
    # Another value in the box: the refusal no longer stands, even before it is withdrawn.
    text, _ = page.review(None, refused, **{**clamped, "tile_size": 32})
    assert not text.startswith("⚠")
    assert page.typed("tile_size", 64, refused) == {}


def test_a_model_is_timed_here_once_per_runtime_and_the_estimate_uses_it(cfg, tmp_path):
    from utils.studio import calibration

    class Clocked:
        """A backend stand-in that takes 0.05 s per call."""
        def __init__(self, precision):
            self.precision, self.calls = precision, 0

        def engine(self):
            return {"runtime": "ncnn", "precision": self.precision, "device": "cpu"}

        def upscale(self, lr, run, progress=None):
            import time
            self.calls += 1
            time.sleep(0.05)

    run = run_settings(cfg, "span", tile_size=64, overlap=22)
    before = estimate(128, 128, run)
    assert not before.measured and before.text().endswith("(not timed here yet)")
    model = Clocked("float32")
    rate = calibration.calibrate(model, run)
    assert model.calls == 2 and rate == pytest.approx(0.05 / (calibration.SIDE ** 2 / 1e6), rel=0.5)
    assert calibration.cache_file() == tmp_path / "cache" / "sr-studio" / "throughput.json"
    assert calibration.calibrate(model, run) == rate and model.calls == 2  # kept: not timed again
    other = Clocked("float16")
    calibration.calibrate(other, run)
    assert other.calls == 2  # another precision is timed on its own
    after = estimate(128, 128, run)
    assert after.measured and "not timed" not in after.text()
    area = after.tile_size[0] * after.tile_size[1] * after.tiles[0] / 1e6
    assert after.seconds == pytest.approx(calibration.measured("span", 4) * area * estimates.PIPELINE_OVERHEAD)


def test_the_tile_line_states_the_chosen_tile_size_and_falls_with_bigger_tiles(cfg):
    counts = []
    for tile in (16, 24, 32, 48, 64, 96, 128, 256):
        planned = estimate(160, 160, run_settings(cfg, "realesrgan", tile_size=tile, overlap=8))
        assert f"(tile size {tile} px, overlap 8 px)" in planned.text()
        counts.append(planned.tiles[0])
    assert counts == sorted(counts, reverse=True) and counts[0] > counts[-1] == 1
    # More overlap makes tiles larger (tile size + overlap): a single tile then says why.
    whole = estimate(160, 160, run_settings(cfg, "realesrgan", tile_size=64, overlap=64))
    assert whole.tiles == (1, 1) and "tile size 64 px, overlap 64 px: the whole image fits in one" in whole.text()


def test_a_target_width_or_height_sets_the_scale_or_is_refused(page, tmp_path):
    Image.new("RGB", (160, 90)).save(tmp_path / "in.png")
    image = str(tmp_path / "in.png")
    assert page.scale_for("width", 400, image, {}) == (2.5, {})
    assert page.scale_for("height", 90, image, {"outscale": "old"}) == (1.0, {})
    scale, refused = page.scale_for("width", 1000, image, {})
    assert scale == gr.skip() and refused == {"outscale": ("a target width of 1000 px is ×6.25 of this image's "
                                                           "160 px; Scale must be from ×1 to ×4", None)}
    assert page.scale_for("width", 400, None, refused) == (gr.skip(), {})
    assert page.scale_for("width", 0, image, refused) == (gr.skip(), {})


def test_no_status_outlives_a_run_that_fails_unexpectedly(page, cfg, tmp_path, monkeypatch):
    def broken(image, request, line, **settings):
        line.begin(1, 5.0)
        raise RuntimeError("disk full")

    monkeypatch.setattr(page.studio, "run_single", broken)
    frames = list(page.run_single(str(tmp_path / "a.png"), "bicubic", [], {}, SimpleNamespace(session_hash="s"),
                                  **vars(Settings.defaults(cfg, "bicubic"))))
    final = dict(zip(SINGLE_OUTPUTS, frames[-1]))
    assert final["progress"] == "" and final["info"] == "⚠ disk full (the previous result is kept)"
    assert final["download"] == gr.skip()
