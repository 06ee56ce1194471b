"""The studio's request service: request folders swept after the TTL (never while their request runs),
NIQE where it means something, one batch folder per input folder, model and scale, messages in the
page's words."""
import os
import time
from types import SimpleNamespace

from PIL import Image

from utils.config import with_overrides
import pytest

from utils.studio.progress import ProgressLine
from utils.studio.service import RESULT_TTL_SECONDS, Studio
from utils.studio.settings import Settings


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    """The models' timings go to this test's cache folder, not the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_sweep_never_removes_a_folder_in_use(cfg, tmp_path):
    studio = Studio(cfg, "bicubic", tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    old = time.time() - RESULT_TTL_SECONDS - 60
    with studio._request_dir() as running:
        (running / "result.png").write_bytes(b"x")
        os.utime(running, (old, old))  # a long request: its folder looks stale
        with studio._request_dir() as other:  # a second request (concurrency ≥ 2) sweeps
            assert running.is_dir() and (running / "result.png").exists()
    finished = other
    os.utime(running, (old, old))
    os.utime(finished, (time.time(), time.time()))
    with studio._request_dir():
        assert not running.exists()  # finished and past the TTL: removed
        assert finished.exists()     # finished but recent: kept for download


def test_niqe_of_the_bicubic_and_the_result_in_the_info_line_and_the_batch_table(cfg, tmp_path):
    """The studio scores what it shows: NIQE of the bicubic upscale and of the result (both before
    encoding) in the single-image info line, and of each written file in the batch table."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    from datapipe.image_io import read_image
    from utils.backends import load_backend
    from utils.evaluation.niqe import niqe
    from utils.pipeline.chain import bicubic_reference, to_array, to_tensor, upscale_image
    from utils.settings import RunSettings
    from utils.studio.settings import Settings

    root = tmp_path / "in"
    (root / "set").mkdir(parents=True)
    rng = np.random.default_rng(1)
    smooth = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 128×128 → 512²
    Image.fromarray(smooth).save(root / "set" / "big.png")
    Image.fromarray(smooth[:8, :8]).save(root / "set" / "tiny.png")
    studio = Studio(cfg, "bicubic", root, tmp_path / "out", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    request, progress = SimpleNamespace(session_hash="s"), ProgressLine()
    settings = vars(Settings.defaults(cfg, "bicubic").replace(color_fix="none").applicable())
    assert settings["niqe"] is True  # on by default: it costs a fraction of a second per megapixel

    done = studio.run_single(str(root / "set" / "big.png"), request, progress, **settings)
    img = read_image(root / "set" / "big.png")
    result, _ = upscale_image(img, load_backend("bicubic", cfg), RunSettings.from_config(
        with_overrides(cfg, {"color_fix": "none", "backend": "bicubic"}), "bicubic"))
    before = to_array(bicubic_reference(to_tensor(img.rgb), (512, 512)).clamp(0, 1))
    assert done.info.endswith(f" · NIQE bicubic {niqe(before):.2f} → result {niqe(result.rgb):.2f} "
                              "(lower: more natural)")
    # Under 192×192 px of result NIQE says more about its few blocks than about the image: not shown.
    Image.fromarray(smooth[:47, :60]).save(root / "set" / "small.png")  # 188×240: just under
    for name in ("tiny.png", "small.png"):
        assert "NIQE" not in studio.run_single(str(root / "set" / name), request, progress, **settings).info
    assert "NIQE" not in studio.run_single(str(root / "set" / "big.png"), request, progress,
                                           **{**settings, "niqe": False}).info

    rows, _, _ = studio.batch(folder="set", request=request, progress=lambda *a, **k: None, **settings)
    by_name = {row[0]: row for row in rows}
    written = tmp_path / "out" / "set_bicubic_x4" / "big.png"
    assert by_name["big.png"][4] == f"{niqe(read_image(written).rgb):.2f}"
    assert by_name["tiny.png"][4] == by_name["small.png"][4] == ""
    rows, _, _ = studio.batch(folder="set", overwrite=True, request=request, progress=lambda *a, **k: None,
                              **{**settings, "niqe": False})
    assert [row[4] for row in rows] == ["", "", ""]


def test_two_models_batches_of_one_folder_keep_their_own_folders(cfg, tmp_path):
    root = tmp_path / "in"
    (root / "holiday").mkdir(parents=True)
    Image.new("RGB", (12, 10), (90, 120, 30)).save(root / "holiday" / "beach.png")
    studio = Studio(cfg, "bicubic", root, tmp_path / "out", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    request, quiet = SimpleNamespace(session_hash="s"), lambda *a, **k: None
    summaries = {}
    for backend in ("bicubic", "span"):
        settings = vars(Settings.defaults(cfg, backend).replace(color_fix="none", niqe=False).applicable())
        rows, archive, summaries[backend] = studio.batch(folder="holiday", request=request, progress=quiet,
                                                         **settings)
        assert [row[1] for row in rows] == ["ok"]
    for backend in ("bicubic", "span"):
        folder = tmp_path / "out" / f"holiday_{backend}_x4"
        assert (folder / "beach.png").is_file()  # the first model's result is still there
        assert summaries[backend] == f"1 ok → out/holiday_{backend}_x4; zip: holiday_{backend}_x4.zip"
    # A changed setting is named as the page names it, not by its config key.
    settings = vars(Settings.defaults(cfg, "span").replace(niqe=False).applicable())
    rows, _, _ = studio.batch(folder="holiday", request=request, progress=quiet, **settings)
    assert rows[0][1:3] == ["ok", "redone: colour fix changed"]


def test_messages_name_the_pages_controls_not_config_keys_or_server_paths(cfg, tmp_path):
    import re

    import gradio as gr
    import pytest

    studio = Studio(cfg, "span", tmp_path / "in", tmp_path / "out", tmp_path / "tmp")
    (tmp_path / "in").mkdir()
    (tmp_path / "tmp").mkdir()
    base = Settings.defaults(cfg, "span")
    request = SimpleNamespace(session_hash="s")
    cases = [(dict(tile_size=10), "Tile size must be a whole number of at least 16 px (got 10)"),
             (dict(overlap=-3), "Overlap must be"), (dict(quality=101, format="webp"), "WebP/JPEG quality must be"),
             (dict(outscale=9), "Scale must be between 1 and 4 (got 9)"),
             (dict(denoise=2), "waifu2x denoise applies only to waifu2x, not SPAN")]
    for changes, words in cases:
        with pytest.raises(gr.Error) as err:
            studio.check({**vars(base.applicable()), **changes})
        assert err.value.message.startswith(words), err.value.message
        assert not re.search(r"\b[a-z_]+\.[a-z_]+\b", err.value.message), err.value.message  # no dotted keys
    with pytest.raises(gr.Error) as err:
        studio.batch(folder="nowhere", request=request, progress=lambda *a, **k: None,
                     **vars(base.applicable()))
    assert err.value.message == "'nowhere': no such folder in the batch root" and str(tmp_path) not in err.value.message
