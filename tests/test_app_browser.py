"""The studio in a real (headless) Chromium, desktop and phone, asserting that the screen tells the
truth: upload, a preset, the tile controls and their cost, a value typed out of range refused in the
control's words, a multi-tile run whose progress line ticks and reaches 100 % with its result, Cancel
leaving no stale status, comparison with the previous run only for the same image, a new input
clearing the old result, the history bringing a run's input back and surviving a reload, batches of one
folder with two models both kept, and on a phone the result blocks collapsed until there is a result
and the progress line on screen while running.

Screenshots go to /tmp/studio-shots/ (a new input after a run, a running multi-tile job, a batch done
with two models; desktop and phone)."""
import re
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app_server import running_app
from utils.backends import BACKENDS
from utils.config import load_config
from utils.settings import SPECS, RunSettings
from utils.studio.catalog import label, unavailable_line
from utils.studio.estimates import estimate
from utils.studio.settings import Settings, config_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set5"
SHOTS = Path("/tmp/studio-shots")
# A run may first load its model, on a machine that may be busy.
RUN_TIMEOUT_MS = 150_000
SIDE = 128  # the test image: small, but several tiles with small tile sizes
# A dotted config key ("span.tile_size", "output.format"), not a file name.
CONFIG_KEY = re.compile(r"\b[a-z_0-9]+\.(?!png\b|jpe?g\b|webp\b|zip\b|py\b)[a-z_]+\b")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    work = tmp_path_factory.mktemp("browser-studio")
    with running_app(work) as url:
        yield url, work


@pytest.fixture(scope="module")
def browser():
    # Never skipped: a missing browser is a broken test environment, not an optional feature.
    assert shutil.which(CHROMIUM), f"Chromium not found at {CHROMIUM}; the browser test needs it"
    SHOTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def cost(backend: str, **tiling) -> str:
    """The tiles the page should show for the test image (the time depends on the server's timing)."""
    cfg = load_config()
    s = Settings.defaults(cfg, backend).replace(**tiling).applicable()
    return estimate(SIDE, SIDE, RunSettings.from_config(config_for(cfg, s, backend), backend)).tiles_text()


def crop(path: Path, image: str, left: int = 60, top: int = 60, side: int = SIDE) -> Path:
    Image.open(SET5 / image).convert("RGB").crop((left, top, left + side, top + side)).save(path)
    return path


def number(page, elem_id: str):
    return page.locator(f"#{elem_id} input[type=number]")


def type_number(page, elem_id: str, value) -> None:
    number(page, elem_id).fill(str(value))
    number(page, elem_id).blur()


def pick(page, backend: str) -> None:
    page.locator("#backend input").click()
    page.get_by_role("option", name=label(backend)).click()


def upload(page, path: Path) -> None:
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    expect(page.locator("#input-image img").first).to_have_attribute("src", re.compile(rf"{path.name}$"),
                                                                      timeout=30_000)


def holiday_folder(work: Path) -> None:
    holiday = work / "inputs" / "holiday"
    holiday.mkdir(parents=True, exist_ok=True)
    crop(holiday / "beach.png", "bird.png", 100, 100, 24)


def progress_text(page, elem_id: str = "progress") -> str:
    """The progress line's own text (not Gradio's queue status drawn over the block)."""
    return page.evaluate(f"document.querySelector('#{elem_id} .md')?.innerText.trim() ?? ''")


def watch_run(page, shot: Path = None) -> tuple[list[str], str]:
    """Click Upscale and read the progress line until the run ends: (the texts seen, in order; the info
    line when 100 % first showed). ``shot``: a screenshot once a tile is being counted."""
    upscale = page.locator("#upscale")
    upscale.click()
    expect(upscale).to_be_disabled()
    seen, info_at_100, deadline = [], None, time.monotonic() + RUN_TIMEOUT_MS / 1000
    while not upscale.is_enabled():
        assert time.monotonic() < deadline, f"the run did not end; progress seen: {seen}"
        text = progress_text(page)
        if text and (not seen or seen[-1] != text):
            seen.append(text)
            if "100 %" in text and info_at_100 is None:
                info_at_100 = page.locator("#run-info textarea").input_value()
            if shot is not None and "tile 1/" in text:
                page.screenshot(path=str(shot))
                shot = None
        time.sleep(0.2)
    if progress_text(page) != seen[-1]:
        seen.append(progress_text(page))
        if "100 %" in seen[-1]:  # shown in the moment the run ended: read with it
            info_at_100 = page.locator("#run-info textarea").input_value()
    return seen, info_at_100


def test_the_studio_on_a_desktop(app, browser, tmp_path):
    url, work = app
    source = crop(tmp_path / "butterfly_crop.png", "butterfly.png")
    other = crop(tmp_path / "baby_crop.png", "baby.png", 200, 200)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(url)
    backend = page.locator("#backend input")
    expect(backend).to_have_value(label("realesrgan"), timeout=30_000)
    # Filled in when the page has loaded (the API leaves it unset: the chosen backend's default).
    expect(number(page, "tile-size")).to_have_value(str(SPECS["realesrgan"].tile_size), timeout=30_000)
    # InvSR-only settings are disabled, saying why.
    page.get_by_text("InvSR (diffusion)").click()
    expect(page.locator("#num-steps input[type=range]")).to_be_disabled()
    expect(page.get_by_text("InvSR only").first).to_be_visible()
    # No result yet: the result area is not on the page.
    expect(page.locator("#result-area")).to_be_hidden()

    upload(page, source)
    # A preset sets the model and its settings in one click.
    page.get_by_role("button", name="Fast", exact=True).click()
    expect(backend).to_have_value(label("span"))
    expect(page.locator("#preset-note")).to_contain_text("Fast: SPAN")
    estimate_line = page.locator("#estimate")
    span = SPECS["span"].context_margin
    expect(estimate_line).to_contain_text(cost("span"))
    # A tile size typed below the control's range is refused in its words, not clamped and run.
    upscale, info = page.locator("#upscale"), page.locator("#run-info textarea")
    type_number(page, "tile-size", 10)
    refusal = "⚠ Tile size must be from 16 to 1024 px (got 10)"
    expect(estimate_line).to_contain_text(refusal)
    upscale.click()
    expect(info).to_have_value(refusal)
    expect(page.locator("#result-area")).to_be_hidden()  # nothing ran
    errors = [estimate_line.inner_text(), info.input_value()]
    # Smaller tiles, then less overlap with the slider itself: the tile estimate follows.
    type_number(page, "tile-size", 32)
    expect(estimate_line).to_contain_text(cost("span", tile_size=32, overlap=span))
    slider = page.locator("#overlap input[type=range]")
    slider.focus()
    for _ in range(span - 8):
        slider.press("ArrowLeft")
    expect(number(page, "overlap")).to_have_value("8")
    expect(estimate_line).to_contain_text(cost("span", tile_size=32, overlap=8))
    assert cost("span", tile_size=32, overlap=8) != cost("span", tile_size=32, overlap=span)

    watch_run(page)
    expect(info).to_have_value(re.compile(rf"^span ×4 .*{SIDE}×{SIDE} → 512×512"))
    expect(page.locator("#result-area")).to_be_visible()
    # One run of this image: nothing earlier to compare with, and the page says so.
    expect(page.locator("#compare-with")).to_contain_text("only for an image run twice")

    # Second run, Real-ESRGAN in 4 tiles (seconds each): the line ticks, with the clock, inside the tiles,
    # says 100 % only with the result, while Upscale is disabled and Cancel offered.
    pick(page, "realesrgan")
    expect(number(page, "tile-size")).to_have_value(str(SPECS["realesrgan"].tile_size))  # the model's own
    # The pick's own updates land first (under load they can trail the slider), then the typed sizes.
    expect(estimate_line).to_contain_text(f"tile size {SPECS['realesrgan'].tile_size} px")
    type_number(page, "tile-size", 64)
    type_number(page, "overlap", 8)
    expect(estimate_line).to_contain_text("≈ 4 tiles")
    seen, info_at_100 = watch_run(page, SHOTS / "desktop-running.png")
    assert len(set(seen)) >= 3, seen  # changed at least twice
    assert info_at_100.startswith("realesrgan ×4"), info_at_100  # 100 % came with the result
    assert any(re.search(r"tile \d/4 · \d+ s elapsed · (≈ \d+ s|< 1 s) left", t) for t in seen), seen
    assert seen[-1].startswith("✓ done in") and seen[-1].endswith("100 %"), seen
    assert not any("100 %" in t for t in seen[:-1]), seen
    expect(info).to_have_value(re.compile(r"^realesrgan ×4"))
    expect(page.locator("#cancel-one")).to_be_hidden()

    # The same image twice: compare with the previous run shows the SPAN result against Real-ESRGAN's.
    page.locator("#compare-with").get_by_label("previous run").check()
    result = page.locator("#result-slider")
    expect(result).to_contain_text("Previous run (SPAN ×4) ↔ this run (Real-ESRGAN ×4)")
    images = result.locator("img")
    expect(images.first).to_have_attribute("src", re.compile(r"butterfly_crop_span_x4\.png$"))
    expect(images.nth(1)).to_have_attribute("src", re.compile(r"butterfly_crop_realesrgan_x4\.png$"))
    expect(page.locator("#download a")).to_have_attribute("download", "butterfly_crop_realesrgan_x4.png")

    # Zoom to 100 % where the input is clicked: one result pixel per screen pixel.
    page.get_by_text("Zoom to 100 %").click()
    page.locator("#input-image img").first.click(position={"x": 10, "y": 10})
    zoomed = page.locator("#zoom-slider img").first
    expect(zoomed).to_be_visible()
    page.wait_for_function("document.querySelector('#zoom-slider img').naturalWidth > 0")
    natural, shown = zoomed.evaluate("i => [i.naturalWidth, i.getBoundingClientRect().width]")
    assert natural == shown == 256

    # Cancel: the run stops, and no "Cancelling" is left on the page afterwards.
    upscale.click()
    page.wait_for_function("document.querySelector('#progress .md')?.innerText.includes('elapsed')",
                           timeout=RUN_TIMEOUT_MS)
    page.locator("#cancel-one").click()
    expect(upscale).to_be_enabled(timeout=RUN_TIMEOUT_MS)
    expect(info).to_have_value(re.compile(r"^Cancelled butterfly_crop\.png"))
    expect(page.locator("body")).not_to_contain_text("Cancelling")

    # A new input: the old image's result, info, download and zoom are gone.
    upload(page, other)
    expect(page.locator("#result-area")).to_be_hidden()
    expect(info).to_have_value("")
    assert progress_text(page) == ""
    page.screenshot(path=str(SHOTS / "desktop-new-input.png"), full_page=True)
    # Its own run: never compared with the butterfly's runs.
    pick(page, "span")
    watch_run(page)
    expect(page.locator("#compare-with input[value='previous run']")).to_be_disabled()
    expect(result).to_contain_text("Bicubic ↔ result")
    expect(images.nth(1)).to_have_attribute("src", re.compile(r"baby_crop_span_x4\.png$"))

    # The history: three runs, captions in full; the first one brings its input back.
    thumbs = page.locator("#history .thumbnail-item")
    expect(thumbs).to_have_count(3)
    expect(page.locator("#history")).to_contain_text("SPAN ×4 · tile size 32, overlap 8 · colour fix")
    thumbs.nth(2).click()
    expect(page.locator("#input-image img").first).to_have_attribute("src", re.compile(r"butterfly_crop\.png$"))
    expect(info).to_have_value(re.compile(r"^span ×4 .*128×128 → 512×512"))
    expect(images.nth(1)).to_have_attribute("src", re.compile(r"butterfly_crop_span_x4\.png$"))

    # A model that cannot run here: the reason at once, and after Upscale it stays in the info line
    # while the previous result stays on screen.
    status = BACKENDS["invsr"].availability(load_config())
    if not status.ok:
        pick(page, "invsr")
        expect(page.locator("#model-note")).to_contain_text(unavailable_line("invsr", status).replace("`", ""))
        upscale.click()
        expect(info).to_have_value(re.compile(r"^⚠ InvSR is not available here: .*previous result is kept"))
        expect(images).to_have_count(2)
        errors.append(info.input_value())
        pick(page, "realesrgan")

    # Batch: one folder with two models, both kept; a missing folder named without server paths.
    holiday_folder(work)
    page.get_by_role("tab", name="Batch").click()
    folder, summary = page.locator("#batch-folder textarea"), page.locator("#batch-summary textarea")
    folder.fill("nowhere")
    page.locator("#upscale-all").click()
    expect(summary).to_have_value("⚠ 'nowhere': no such folder in the batch root", timeout=RUN_TIMEOUT_MS)
    errors.append(summary.input_value())
    folder.fill("holiday")
    for model in ("span", "bicubic"):
        pick(page, model)
        page.locator("#upscale-all").click()
        expect(summary).to_have_value(f"1 ok → outputs/holiday_{model}_x4; zip: holiday_{model}_x4.zip",
                                      timeout=RUN_TIMEOUT_MS)
        expect(page.locator("#batch-progress")).to_contain_text("100 %")
        expect(page.locator("#upscale-all")).to_be_enabled()
    assert all((work / "outputs" / f"holiday_{m}_x4" / "beach.png").is_file() for m in ("span", "bicubic"))
    page.screenshot(path=str(SHOTS / "desktop-batch-two-models.png"), full_page=True)
    assert not [e for e in errors if CONFIG_KEY.search(e) or str(work) in e], errors
    expect(page.locator("body")).not_to_contain_text("Cancelling")

    # Settings and the history survive a reload (browser storage).
    page.reload()
    expect(backend).to_have_value(label("bicubic"), timeout=30_000)
    expect(page.locator("#history .thumbnail-item")).to_have_count(3, timeout=30_000)
    page.close()


def test_the_studio_on_a_phone(app, browser, tmp_path):
    url, work = app
    holiday_folder(work)
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(url)
    expect(page.locator("#backend input")).to_have_value(re.compile(".+"), timeout=30_000)
    # Empty result blocks take no room: input, Upscale, then straight on to the presets and settings.
    expect(page.locator("#result-area")).to_be_hidden()
    upload_box, button = (page.locator(sel).bounding_box() for sel in ("#input-image", "#upscale"))
    assert upload_box["y"] + upload_box["height"] <= 844 and button["y"] + button["height"] <= 844
    presets = page.locator("#preset-0").bounding_box()
    assert button["y"] < presets["y"] < button["y"] + 700, (button, presets)
    # The model picker's text stops before its arrow.
    padding = page.locator("#backend input").evaluate("e => parseFloat(getComputedStyle(e).paddingRight)")
    assert padding >= 24

    upload(page, crop(tmp_path / "butterfly_crop.png", "butterfly.png"))
    page.get_by_role("button", name="Fast", exact=True).click()
    expect(page.locator("#backend input")).to_have_value(label("span"))
    type_number(page, "tile-size", 16)  # 64 tiles: a run long enough to watch
    page.locator("#upscale").scroll_into_view_if_needed()
    page.locator("#upscale").click()
    progress = page.locator("#progress")
    expect(progress).to_contain_text("elapsed", timeout=RUN_TIMEOUT_MS)
    box, info = progress.bounding_box(), page.locator("#run-info").bounding_box()
    assert box["y"] + box["height"] <= 844 and info["y"] < 844, (box, info)  # on screen while running
    page.screenshot(path=str(SHOTS / "phone-running.png"))
    expect(progress).to_contain_text("100 %", timeout=RUN_TIMEOUT_MS)
    expect(page.locator("#result-area")).to_be_visible()
    upload(page, crop(tmp_path / "baby_crop.png", "baby.png", 200, 200))
    expect(page.locator("#result-area")).to_be_hidden()
    page.screenshot(path=str(SHOTS / "phone-new-input.png"), full_page=True)

    page.get_by_role("tab", name="Batch").click()
    page.locator("#batch-folder textarea").fill("holiday")
    page.locator("#upscale-all").click()
    expect(page.locator("#batch-summary textarea")).to_have_value(re.compile("holiday_"), timeout=RUN_TIMEOUT_MS)
    # The table scrolls sideways instead of cutting off its last columns: scrolled, NIQE is on screen.
    scrolled = page.locator("#batch-table").evaluate("""e => {
        const wide = [...e.querySelectorAll('*')].find(n => ['auto', 'scroll'].includes(getComputedStyle(n).overflowX)
                                                          && n.scrollWidth > n.clientWidth);
        if (wide) wide.scrollLeft = wide.scrollWidth;
        return Boolean(wide);
    }""")
    niqe = page.locator("#batch-table th").filter(has_text="NIQE").first.bounding_box()
    assert scrolled and niqe["x"] + niqe["width"] <= 390, niqe
    page.screenshot(path=str(SHOTS / "phone-batch.png"), full_page=True)
    page.close()
