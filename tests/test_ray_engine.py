"""The Ray engine (utils/batch/ray_engine.py) on an embedded 2-CPU Ray, against the local engine.

Small images (≤ 48 px) keep Real-ESRGAN quick; each run starts its own actor pool (a few seconds).
"""
import importlib.util
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_settings
from tests.test_cli import run_cli
from utils.backends import load_backend
from utils.batch import ray_engine
from utils.batch.naming import plan_paths
from utils.batch.records import RECORDS_DIR
from utils.batch.runner import ERRORS_LOG, count_statuses, process_batch
from utils.batch.ray_engine import WORKER_DIED, RayEngine, RayEngineError

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray is not installed: `make setup-ray` (requirements-ray.txt)")
# Ray titles an actor's process after the class of the map_batches UDF; ".submit" while it runs a file.
WORKER_TITLE = b"ray::MapWorker(MapBatches(FileWorker))"


@pytest.fixture(scope="module")
def engine():
    with RayEngine(num_cpus=2) as eng:
        yield eng


def make_images(folder: Path, count: int, size: int = 40) -> Path:
    """PNG inputs of a few sizes and modes (RGB, RGBA, grayscale), so alpha and modes are compared too."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(7)
    for i in range(count):
        rgb = rng.integers(0, 256, (size - 4 * (i % 3), size, 3), dtype=np.uint8)
        img = Image.fromarray(rgb)
        img = img.convert(("RGB", "RGBA", "L")[i % 3]) if i % 3 else img
        img.save(folder / f"img{i:02d}.png")
    return folder


def outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def local_run(cfg, backend: str, src: Path, out: Path):
    pairs = plan_paths(src, out, "png")
    return process_batch(pairs, load_backend(backend, cfg), run_settings(cfg, backend))


def ray_run(engine, cfg, backend: str, src: Path, out: Path, **kwargs):
    return engine.run(plan_paths(src, out, "png"), backend, cfg, run_settings(cfg, backend), **kwargs)


def parts_left(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


def worker_pids(running_only: bool = False) -> list[int]:
    """PIDs of this test's Ray batch actors (running a file, with ``running_only``): the children of the
    raylet that this process started, never another Ray's."""
    parents, titles = {}, {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            titles[int(proc.name)] = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
    ours = {pid for pid, parent in parents.items() if parent == os.getpid()}
    wanted = WORKER_TITLE + b".submit" if running_only else WORKER_TITLE
    return [pid for pid, title in titles.items() if parents[pid] in ours and title.startswith(wanted)]


def kill_running_worker(killed: list[int]) -> None:
    """SIGKILL one actor while it is processing a file (once)."""
    deadline = time.monotonic() + 10
    while not killed and time.monotonic() < deadline:
        running = worker_pids(running_only=True)
        if running:
            os.kill(running[0], signal.SIGKILL)
            killed.append(running[0])
        else:
            time.sleep(0.005)


def test_without_ray_the_engine_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail as if not installed
    with pytest.raises(RayEngineError, match="make setup-ray"):
        RayEngine()


def test_actor_resources_leave_cpu_for_ray_data_and_share_gpus():
    two_cpus = [{"Resources": {"CPU": 2.0}}]
    assert ray_engine.actor_resources(1, two_cpus) == {"num_cpus": 1.5}
    assert ray_engine.actor_resources(2, two_cpus) == {"num_cpus": 0.75}
    cluster = [{"Resources": {"CPU": 8.0, "GPU": 1.0}}, {"Resources": {"CPU": 8.0, "GPU": 1.0}}]
    assert ray_engine.actor_resources(2, cluster) == {"num_cpus": 7.5, "num_gpus": 1.0}
    assert ray_engine.actor_resources(4, cluster) == {"num_cpus": 3.75, "num_gpus": 0.5}
    assert ray_engine.actor_resources(1, cluster) == {"num_cpus": 7.5, "num_gpus": 1.0}  # one node at most
    assert ray_engine.default_workers(cluster) == 2 and ray_engine.default_workers(two_cpus * 3) == 3
    with pytest.raises(RayEngineError, match="no CPU"):
        ray_engine.actor_resources(1, [{"Resources": {"CPU": 0.5}}])


@needs_ray
@pytest.mark.parametrize("backend", ["bicubic", "realesrgan"])
def test_outputs_match_the_local_engine_byte_for_byte(engine, cfg, tmp_path, backend):
    src = make_images(tmp_path / "in", 6)
    local = local_run(cfg, backend, src, tmp_path / "local")
    seen = []
    items = ray_run(engine, cfg, backend, src, tmp_path / "ray", workers=2, on_item=seen.append)
    assert [i.status for i in items] == ["ok"] * 6 == [i.status for i in local]
    assert [i.source for i in items] == [i.source for i in local]  # the caller's paths, in pairs order
    assert sorted(i.source for i in seen) == sorted(i.source for i in items)  # one callback per file
    assert all(i.output and i.output.parent == tmp_path / "ray" for i in items)
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert Image.open(tmp_path / "ray" / "img01.png").mode == "RGBA"
    # The resume records agree too: the same backend identity and settings were recorded.
    assert outputs(tmp_path / "ray" / RECORDS_DIR) == outputs(tmp_path / "local" / RECORDS_DIR)


@needs_ray
def test_a_corrupt_file_is_one_error_row_and_the_rest_finish(engine, cfg, tmp_path):
    src = make_images(tmp_path / "in", 4)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    (out / "img03.png").mkdir(parents=True)  # an output that cannot be written: an unexpected error
    items = ray_run(engine, cfg, "bicubic", src, out, workers=2, errors_log=out / ERRORS_LOG)
    by_name = {i.source.name: i for i in items}
    assert by_name["broken.png"].status == "error" and "broken.png: not a readable image" in by_name["broken.png"].reason
    assert not by_name["broken.png"].traceback
    assert by_name["img03.png"].status == "error" and "IsADirectoryError" in by_name["img03.png"].traceback
    assert count_statuses(items) == {"ok": 3, "skipped": 0, "error": 2, "cancelled": 0}
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == ["errors.log", "img00.png", "img01.png",
                                                                    "img02.png"]
    log = (out / ERRORS_LOG).read_text()  # written by the driver, like the local engine
    assert "img03.png" in log and "IsADirectoryError" in log and "broken.png" not in log


@needs_ray
def test_a_rerun_skips_finished_files(engine, cfg, tmp_path):
    src = make_images(tmp_path / "in", 4)
    out = tmp_path / "out"
    assert [i.status for i in ray_run(engine, cfg, "bicubic", src, out, workers=1)] == ["ok"] * 4
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    (src / "img02.png").unlink()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(src / "img02.png")  # a changed input is redone
    items = ray_run(engine, cfg, "bicubic", src, out, workers=2)
    assert {i.source.name: i.status for i in items} == {"img00.png": "skipped", "img01.png": "skipped",
                                                        "img02.png": "ok", "img03.png": "skipped"}
    assert items[2].reason == "redone: input changed"
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    assert {n for n in before if before[n] != after[n]} == {"img02.png"}
    # The local engine reads the Ray engine's records: nothing to redo.
    assert [i.status for i in local_run(cfg, "bicubic", src, out)] == ["skipped"] * 4


@needs_ray
def test_a_worker_killed_mid_file_is_replaced_and_every_file_finishes(engine, cfg, tmp_path):
    src = make_images(tmp_path / "in", 10, size=48)
    killed: list[int] = []
    items = ray_run(engine, cfg, "realesrgan", src, tmp_path / "ray", workers=2,
                    on_item=lambda item: kill_running_worker(killed))
    assert killed, "no worker was seen running a file"
    assert [i.status for i in items] == ["ok"] * 10
    assert not parts_left(tmp_path / "ray")
    local_run(cfg, "realesrgan", src, tmp_path / "local")
    assert outputs(tmp_path / "ray") == outputs(tmp_path / "local")
    assert killed[0] not in worker_pids()


@needs_ray
def test_a_file_whose_worker_dies_on_every_attempt_is_reported(engine, cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(ray_engine, "TASK_RETRIES", 0)  # the first death is the last attempt
    src = make_images(tmp_path / "in", 8, size=48)
    out = tmp_path / "out"
    killed: list[int] = []
    items = ray_run(engine, cfg, "realesrgan", src, out, workers=1, on_item=lambda item: kill_running_worker(killed))
    assert killed
    failed = [i for i in items if i.status == "error"]
    assert failed and len(items) == 8 and {i.status for i in items} == {"ok", "error"}
    for item in failed:
        assert WORKER_DIED in item.reason and "1 attempts" in item.reason and item.output is None
        assert not (out / item.source.name).exists()
    assert not parts_left(out)
    # The job's workers end with it: Ray Data 2.60 would keep the restarted one, whose CPUs the rerun needs.
    deadline = time.monotonic() + 10
    while worker_pids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not worker_pids()
    # A rerun does the lost files and skips the rest.
    monkeypatch.undo()
    again = ray_run(engine, cfg, "realesrgan", src, out, workers=1)
    assert {i.source for i in again if i.status == "ok"} == {i.source for i in failed}
    assert count_statuses(again)["skipped"] == 8 - len(failed)


@needs_ray
def test_cancel_stops_new_files_and_writes_nothing_partial(engine, cfg, tmp_path):
    src = make_images(tmp_path / "in", 12, size=48)
    out = tmp_path / "out"
    stop = threading.Event()
    items = ray_run(engine, cfg, "realesrgan", src, out, workers=1, stop=stop, on_item=lambda item: stop.set())
    counts = count_statuses(items)
    assert counts["ok"] >= 1 and counts["cancelled"] >= 1 and counts["ok"] + counts["cancelled"] == 12
    for item in items:
        assert (out / item.source.name).exists() == (item.status == "ok")
        assert item.status == "ok" or item.reason == "not processed"
    assert not parts_left(out)


@needs_ray
def test_a_node_that_cannot_see_the_files_is_refused(engine, cfg, tmp_path):
    src = make_images(tmp_path / "in", 1)
    pairs = plan_paths(src, tmp_path / "out", "png")
    assert engine.unseen_paths([src / "img00.png", tmp_path]) == {}
    missing = tmp_path / "elsewhere" / "photo.png"  # as if the input were on the driver's disk only
    with pytest.raises(RayEngineError, match=f"node .* cannot see {re.escape(str(missing))}"):
        engine.check_shared_storage([(missing, pairs[0][1])])
    assert not list((tmp_path / "out").iterdir())  # the visibility marker is gone again


@needs_ray
def test_command_line_engine_ray(tmp_path):
    src = make_images(tmp_path / "in", 3)
    res = run_cli("-i", src, "-o", tmp_path / "out", "--backend", "bicubic", "--engine", "ray", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert "done: 3 written, 0 skipped (same input and settings), 0 failed" in res.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["img00.png", "img01.png", "img02.png"]
    res = run_cli("-i", src, "-o", tmp_path / "out2", "--engine", "ray", "--ray-address", "127.0.0.1:1")
    assert res.returncode == 2 and "cannot connect to the Ray cluster at 127.0.0.1:1" in res.stderr


@needs_ray
def test_the_studio_batch_on_ray_matches_the_local_studio(engine, cfg, tmp_path):
    """The app started with --engine ray: the Batch tab's folder run goes through the Ray engine, with
    per-file progress, the same files and the same table as the app's local engine."""
    from types import SimpleNamespace

    from utils.studio.service import Studio
    from utils.studio.settings import Settings

    make_images(tmp_path / "root" / "holiday", 3)
    settings = vars(Settings.defaults(cfg, "bicubic").replace(color_fix="none").applicable())
    request = SimpleNamespace(session_hash="s1")
    tables = {}
    for name, ray in (("local", None), ("ray", engine)):
        studio = Studio(cfg, "bicubic", tmp_path / "root", tmp_path / name, tmp_path / f"tmp-{name}", ray)
        (tmp_path / f"tmp-{name}").mkdir()
        progress = []
        rows, archive, summary = studio.batch(folder="holiday", request=request,
                                              progress=lambda f, desc="": progress.append(desc), **settings)
        tables[name] = sorted(rows)
        assert summary.startswith("3 ok") and archive.endswith("holiday_bicubic_x4.zip")
        if ray is not None:
            assert [d.split(" · ")[0] for d in progress[1:]] == [f"file {n}/3 done" for n in (1, 2, 3)]
    assert [r[:3] for r in tables["ray"]] == [r[:3] for r in tables["local"]]
    assert outputs(tmp_path / "ray" / "holiday_bicubic_x4") == outputs(tmp_path / "local" / "holiday_bicubic_x4")
