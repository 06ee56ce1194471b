"""The studio in a real (headless) Chromium, desktop and phone: upload, a preset, the tile controls and
their cost, two runs with the time left shown, comparison with the previous run, the 100 % zoom, the
session history, an error that stays, settings surviving a reload, and the image above the fold on a
phone. Screenshots go to the test's temp folder."""
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app_server import running_app
from utils.backends import BACKENDS
from utils.settings import SPECS
from utils.config import load_config
from utils.settings import RunSettings
from utils.studio.catalog import label, unavailable_line
from utils.studio.estimates import estimate
from utils.studio.settings import Settings, config_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set5"
# A run may first load its model, on a machine that may be busy.
RUN_TIMEOUT_MS = 150_000
SIDE = 128  # the test image: small, but several tiles with small tile sizes


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("browser-studio")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    # Never skipped: a missing browser is a broken test environment, not an optional feature.
    assert shutil.which(CHROMIUM), f"Chromium not found at {CHROMIUM}; the browser test needs it"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def cost(backend: str, **tiling) -> str:
    """The estimate the page should show for the test image."""
    cfg = load_config()
    s = Settings.defaults(cfg, backend).replace(**tiling).applicable()
    return estimate(SIDE, SIDE, RunSettings.from_config(config_for(cfg, s, backend), backend)).text()


def number(page, elem_id: str):
    return page.locator(f"#{elem_id} input[type=number]")


def test_the_studio_on_a_desktop(app_url, browser, tmp_path):
    source = tmp_path / "butterfly_crop.png"
    Image.open(SET5 / "butterfly.png").convert("RGB").crop((60, 60, 60 + SIDE, 60 + SIDE)).save(source)
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.goto(app_url)
    backend = page.locator("#backend input")
    expect(backend).to_have_value(label("realesrgan"), timeout=30_000)
    # Filled in when the page has loaded (the API leaves it unset: the chosen backend's default).
    expect(number(page, "tile-size")).to_have_value(str(load_config().realesrgan.tile_size), timeout=30_000)
    # InvSR-only settings are disabled, saying why.
    page.get_by_text("InvSR (diffusion)").click()
    expect(page.locator("#num-steps input[type=range]")).to_be_disabled()
    expect(page.get_by_text("InvSR only").first).to_be_visible()

    page.locator("#input-image input[type=file]").set_input_files(str(source))
    expect(page.locator("#input-image img").first).to_have_attribute("src", re.compile(r"butterfly_crop\.png$"),
                                                                     timeout=30_000)
    # A preset sets the model and its settings in one click.
    page.get_by_role("button", name="Fast", exact=True).click()
    expect(backend).to_have_value(label("span"))
    expect(page.locator("#preset-note")).to_contain_text("Fast: SPAN")
    estimate_line = page.locator("#estimate")
    span = SPECS["span"].context_margin
    expect(estimate_line).to_contain_text(cost("span"))
    # Smaller tiles, then less overlap with the slider itself: the tile estimate follows.
    number(page, "tile-size").fill("32")
    number(page, "tile-size").blur()
    expect(estimate_line).to_contain_text(cost("span", tile_size=32, overlap=span))
    slider = page.locator("#overlap input[type=range]")
    slider.focus()
    for _ in range(span - 8):
        slider.press("ArrowLeft")
    expect(number(page, "overlap")).to_have_value("8")
    expect(estimate_line).to_contain_text(cost("span", tile_size=32, overlap=8))
    assert cost("span", tile_size=32, overlap=8) != cost("span", tile_size=32, overlap=span)

    upscale, info = page.locator("#upscale"), page.locator("#run-info")
    upscale.click()
    expect(info.locator("textarea")).to_have_value(re.compile(rf"^span ×4 .*{SIDE}×{SIDE} → 512×512"),
                                                   timeout=RUN_TIMEOUT_MS)

    # Second run: Real-ESRGAN (seconds here), the time left on show, Upscale disabled and Cancel offered meanwhile.
    backend.click()
    page.get_by_role("option", name=label("realesrgan")).click()
    expect(number(page, "tile-size")).to_have_value(str(load_config().realesrgan.tile_size))  # the model's own
    number(page, "tile-size").fill("96")
    number(page, "tile-size").blur()
    upscale.click()
    expect(info).to_contain_text(re.compile(r"elapsed · (≈ \d+ s|< 1 s) left"), timeout=RUN_TIMEOUT_MS)
    expect(upscale).to_be_disabled()
    expect(page.locator("#cancel-one")).to_be_visible()
    expect(info.locator("textarea")).to_have_value(re.compile(r"^realesrgan ×4"), timeout=RUN_TIMEOUT_MS)
    expect(upscale).to_be_enabled()
    expect(page.locator("#cancel-one")).to_be_hidden()

    # Compare with the previous run: the slider shows the SPAN result against the Real-ESRGAN one.
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

    # The session history: two runs; the first can be shown again.
    thumbs = page.locator("#history .thumbnail-item")
    expect(thumbs).to_have_count(2)
    thumbs.nth(1).click()
    expect(info.locator("textarea")).to_have_value(re.compile(r"^SPAN ×4 · tile 32 · "))
    page.screenshot(path=str(tmp_path / "desktop.png"), full_page=True)

    # A model that cannot run here: the reason at once, and after Upscale it stays in the info line
    # while the previous result stays on screen.
    cfg = load_config()
    status = BACKENDS["invsr"].availability(cfg)
    if not status.ok:
        backend.click()
        page.get_by_role("option", name=label("invsr")).click()
        expect(page.locator("#model-note")).to_contain_text(unavailable_line("invsr", status).replace("`", ""))
        upscale.click()
        expect(info.locator("textarea")).to_have_value(re.compile(r"^⚠ InvSR is not available here: .*previous "
                                                                  r"result is kept"))
        expect(images).to_have_count(2)
        page.screenshot(path=str(tmp_path / "desktop-error.png"), full_page=True)
        backend.click()
        page.get_by_role("option", name=label("realesrgan")).click()
        number(page, "tile-size").fill("96")
        number(page, "tile-size").blur()

    # Settings survive a reload (browser storage).
    expect(estimate_line).to_contain_text(cost("realesrgan", tile_size=96))
    page.reload()
    expect(backend).to_have_value(label("realesrgan"), timeout=30_000)
    expect(number(page, "tile-size")).to_have_value("96", timeout=30_000)
    page.close()
    assert (tmp_path / "desktop.png").stat().st_size > 50_000


def test_the_studio_on_a_phone_puts_the_image_first(app_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page.goto(app_url)
    expect(page.locator("#backend input")).to_have_value(label("realesrgan"), timeout=30_000)
    upload, button = (page.locator(sel).bounding_box() for sel in ("#input-image", "#upscale"))
    assert upload["y"] + upload["height"] <= 844 and button["y"] + button["height"] <= 844, (upload, button)
    settings = page.locator("#backend").bounding_box()
    assert settings["y"] > button["y"]  # the settings come after the image and its button
    page.screenshot(path=str(tmp_path / "phone.png"))
    page.screenshot(path=str(tmp_path / "phone-full.png"), full_page=True)
    page.close()
