"""The studio's request folders: swept after the TTL, never while their request runs."""
import os
import time

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
