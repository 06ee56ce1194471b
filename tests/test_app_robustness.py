"""Issue 7 against the running studio: the bad-input corpus, concurrent clients, a full queue."""
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app_server import running_app, running_app_process
from tests.bad_inputs import EXPECTED, make_corpus


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def upscale(client: Client, path: Path, **settings):
    return client.predict(handle_file(str(path)), api_name="/upscale", **settings)


def test_every_bad_input_through_the_app(tmp_path):
    corpus = make_corpus(tmp_path / "corpus")
    (tmp_path / "inputs").mkdir()
    with running_app(tmp_path) as url:
        client = Client(url, verbose=False)
        for name, (kind, detail) in EXPECTED.items():
            if kind == "error":
                with pytest.raises(AppError) as err:
                    upscale(client, corpus / name, backend="bicubic")
                assert name in str(err.value) and detail in str(err.value), (name, str(err.value))
            else:
                _, png, info = upscale(client, corpus / name, backend="bicubic")
                with Image.open(png) as im:
                    assert im.size == detail, name
                if name == "animated.gif":
                    assert "only the first was used" in info
        # Still serving after all of that.
        _, png, _ = upscale(client, corpus / "rgba.png", backend="realesrgan")
        assert Image.open(png).mode == "RGBA"


def solid(path: Path, colour: tuple[int, int, int], size: int = 24) -> Path:
    Image.new("RGB", (size, size), colour).save(path)
    return path


def test_concurrent_clients_each_get_their_own_result(tmp_path):
    (tmp_path / "inputs").mkdir()
    jobs = [("bicubic", (30 * i, 200 - 20 * i, 100)) for i in range(8)] + \
           [("realesrgan", (220, 40, 40)), ("realesrgan", (40, 40, 220))]
    with running_app_process(tmp_path, "--concurrency", "2") as (url, proc):
        warm = Client(url, verbose=False)
        upscale(warm, solid(tmp_path / "warm.png", (1, 2, 3)), backend="bicubic")
        upscale(warm, solid(tmp_path / "warm.png", (1, 2, 3)), backend="realesrgan")
        before = rss_mb(proc.pid)

        def run(job):
            index, (backend, colour) = job
            client = Client(url, verbose=False)
            _, png, info = upscale(client, solid(tmp_path / f"c{index}.png", colour), backend=backend)
            return backend, colour, np.asarray(Image.open(png).convert("RGB"), np.float32), info

        for _ in range(2):  # twice, so growth that is not a one-off warm-up shows
            with ThreadPoolExecutor(len(jobs)) as pool:
                results = list(pool.map(run, enumerate(jobs)))
            for backend, colour, pixels, info in results:
                assert pixels.shape == (96, 96, 3) and info.startswith(f"{backend} ×4")
                tolerance = 1 if backend == "bicubic" else 25  # a GAN may tint a flat patch slightly
                assert np.abs(pixels.mean(axis=(0, 1)) - colour).max() <= tolerance, (backend, colour)
        after = rss_mb(proc.pid)
    assert after < before * 1.25 + 100, f"server memory grew from {before:.0f} MB to {after:.0f} MB"


def test_a_full_queue_turns_requests_away_cleanly(tmp_path):
    (tmp_path / "inputs").mkdir()
    with running_app(tmp_path, "--concurrency", "1", "--max-queue", "1") as url:
        big = solid(tmp_path / "big.png", (90, 120, 150), size=64)

        def run(_):
            try:
                _, png, _ = upscale(Client(url, verbose=False), big, backend="realesrgan")
                return Image.open(png).size
            except Exception as exc:  # the client's own exception type for a rejected job
                return str(exc)

        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(run, range(6)))
        done = [o for o in outcomes if o == (256, 256)]
        refused = [o for o in outcomes if o != (256, 256)]
        assert done, outcomes
        assert refused, "six simultaneous requests fit a queue of one?"
        assert all("queue" in o.lower() and "full" in o.lower() for o in refused), refused
        _, png, _ = upscale(Client(url, verbose=False), big, backend="bicubic")  # and it recovers
        assert Image.open(png).size == (256, 256)
