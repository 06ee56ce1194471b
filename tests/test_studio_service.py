"""The studio's request folders: swept after the TTL, never while their request runs."""
import os
import time

from utils.config import with_overrides
from utils.studio.service import RESULT_TTL_SECONDS, Studio


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
    smooth = np.kron(rng.integers(0, 256, (16, 16, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 128×128
    Image.fromarray(smooth).save(root / "set" / "big.png")
    Image.fromarray(smooth[:8, :8]).save(root / "set" / "tiny.png")
    studio = Studio(cfg, "bicubic", root, tmp_path / "out", tmp_path / "tmp")
    (tmp_path / "tmp").mkdir()
    request, progress = SimpleNamespace(session_hash="s"), lambda *a, **k: None
    settings = vars(Settings.defaults(cfg, "bicubic").replace(color_fix="none").applicable())
    assert settings["niqe"] is True  # on by default: it costs a fraction of a second per megapixel

    done = studio.run_single(str(root / "set" / "big.png"), request, progress, **settings)
    img = read_image(root / "set" / "big.png")
    result, _ = upscale_image(img, load_backend("bicubic", cfg), RunSettings.from_config(
        with_overrides(cfg, {"color_fix": "none", "backend": "bicubic"}), "bicubic"))
    before = to_array(bicubic_reference(to_tensor(img.rgb), (512, 512)).clamp(0, 1))
    assert done.info.endswith(f" · NIQE bicubic {niqe(before):.2f} → result {niqe(result.rgb):.2f} "
                              "(lower: more natural)")
    tiny = studio.run_single(str(root / "set" / "tiny.png"), request, progress, **settings)
    assert "NIQE bicubic – (under two 96×96 blocks) → result – (under two 96×96 blocks)" in tiny.info
    assert "NIQE" not in studio.run_single(str(root / "set" / "big.png"), request, progress,
                                           **{**settings, "niqe": False}).info

    rows, _, _ = studio.batch(folder="set", request=request, progress=progress, **settings)
    by_name = {row[0]: row for row in rows}
    written = tmp_path / "out" / "set_x4" / "big.png"
    assert by_name["big.png"][4] == f"{niqe(read_image(written).rgb):.2f}"
    assert by_name["tiny.png"][4] == "– (under two 96×96 blocks)"
    rows, _, _ = studio.batch(folder="set", overwrite=True, request=request, progress=progress,
                              **{**settings, "niqe": False})
    assert [row[4] for row in rows] == ["", ""]
