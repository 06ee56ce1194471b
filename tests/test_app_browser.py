"""The studio in a real (headless) Chromium: upload, run, see the before/after slider."""
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from app_server import running_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SET5 = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "Set5"
# Fresh server: the first run also loads the model, on a machine that may be busy.
RUN_TIMEOUT_MS = 150_000


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    with running_app(tmp_path_factory.mktemp("browser-studio")) as url:
        yield url


def test_single_image_in_the_browser(app_url, tmp_path):
    # Never skipped: a missing browser is a broken test environment, not an optional feature.
    assert shutil.which(CHROMIUM), f"Chromium not found at {CHROMIUM}; the browser test needs it"
    source = tmp_path / "butterfly_crop.png"
    Image.open(SET5 / "butterfly.png").convert("RGB").crop((90, 90, 138, 138)).save(source)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(app_url)
            expect(page.get_by_text("Default backend: realesrgan", exact=False)).to_be_visible(timeout=30_000)
            # InvSR-only settings are greyed out (with a hint) while another backend is selected.
            expect(page.get_by_text("apply to InvSR only")).to_be_visible()
            expect(page.get_by_label("Seed")).to_be_disabled()
            page.locator("#input-image input[type=file]").set_input_files(str(source))
            preview = page.locator("#input-image img").first
            expect(preview).to_have_attribute("src", re.compile(r"butterfly_crop\.png$"), timeout=30_000)

            page.get_by_role("button", name="Upscale", exact=True).click()
            info = page.locator("#run-info textarea")
            expect(info).to_have_value(re.compile(r"^×4 · realesrgan .*48×48 → 192×192"), timeout=RUN_TIMEOUT_MS)
            images = page.locator("#result-slider img")
            expect(images).to_have_count(2, timeout=30_000)
            sources = [images.nth(i).get_attribute("src") for i in range(2)]
            assert all(sources) and sources[0] != sources[1]
            assert any(s.endswith(".png") for s in sources), sources  # the result itself, not a re-encode
            page.screenshot(path=str(tmp_path / "studio.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "studio.png").stat().st_size > 10_000
