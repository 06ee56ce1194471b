"""The file/batch layer: per-file errors with tracebacks kept, resume records, never over an input."""
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.conftest import interrupted_write, run_settings
from utils.backends.bicubic import BicubicBackend
from utils.batch.naming import plan_paths
from utils.batch.records import record_path
from utils.batch.runner import ERRORS_LOG, process_batch


class ExplodingBicubic(BicubicBackend):
    """Bicubic that hits a bug on one image size: a stand-in for a real backend failure."""

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if x.shape[-1] == 13:
            raise RuntimeError("index out of range in a model layer")
        return super()._patch(x, scale)


def make_inputs(folder: Path) -> Path:
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)).save(folder / "boom.png")
    (folder / "bad.png").write_bytes(b"not a png")
    return folder


def test_unexpected_errors_keep_their_traceback_and_the_batch_goes_on(cfg, tmp_path):
    src, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    items = process_batch(plan_paths(src, out, "png"), ExplodingBicubic(cfg), run_settings(cfg, "bicubic"),
                          errors_log=out / ERRORS_LOG)
    by_name = {i.source.name: i for i in items}
    assert by_name["a.png"].status == "ok" and (out / "a.png").is_file()
    # A bad input is one line and no traceback: it is the user's to fix.
    assert by_name["bad.png"].status == "error" and "not a readable image" in by_name["bad.png"].reason
    assert not by_name["bad.png"].traceback
    # A bug is one line for the summary, and its traceback goes to errors.log.
    boom = by_name["boom.png"]
    assert boom.status == "error" and boom.reason == ("boom.png: unexpected RuntimeError: index out of range "
                                                      "in a model layer")
    log = (out / ERRORS_LOG).read_text()
    assert "Traceback (most recent call last)" in log and "in _patch" in log and str(src / "boom.png") in log
    assert "bad.png" not in log
    assert not (out / "boom.png").exists() and not list(out.glob(".*.part"))


def test_record_says_what_made_the_output(cfg, tmp_path):
    src, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    (src / "boom.png").unlink()
    settings = run_settings(cfg, "bicubic", {"color_fix": "ycbcr"})
    process_batch(plan_paths(src, out, "png"), BicubicBackend(cfg), settings)
    record = json.loads(record_path(out / "a.png").read_text())
    import hashlib
    assert record["input_sha256"] == hashlib.sha256((src / "a.png").read_bytes()).hexdigest()
    assert record["made_by"] == {"backend": "bicubic", "runtime": "torch", "precision": "float32", "device": "cpu",
                                 "weights": {}}
    assert record["settings"]["tile_size"] == 1024 and record["settings"]["output_format"] == "png"
    assert record["settings"]["color_fix"] == "ycbcr"
    assert not record_path(out / "bad.png").exists()


def test_a_rerun_redoes_only_changed_settings(cfg, tmp_path):
    src, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    (src / "boom.png").unlink()
    pairs = plan_paths(src, out, "png")
    backend = BicubicBackend(cfg)
    process_batch(pairs, backend, run_settings(cfg, "bicubic"))
    first = (out / "a.png").stat().st_mtime_ns
    again = {i.source.name: (i.status, i.reason) for i in process_batch(pairs, backend, run_settings(cfg, "bicubic"))}
    assert again["a.png"] == ("skipped", "same input and settings")
    assert (out / "a.png").stat().st_mtime_ns == first
    edges = process_batch(pairs, backend, run_settings(cfg, "bicubic", {"postprocess.edge_enhancement": 0.5}))
    assert (edges[0].status, edges[0].reason) == ("ok", "redone: settings changed (edge_enhancement)")
    # Settings that do not change a bicubic output (InvSR's seed, batching) do not redo it.
    same = process_batch(pairs, backend, run_settings(cfg, "bicubic", {"postprocess.edge_enhancement": 0.5,
                                                                       "seed": 1, "basesr.chopping.extra_bs": 4}))
    assert same[0].status == "skipped"


def test_stale_temp_files_of_dead_writers_are_removed_before_a_batch(cfg, tmp_path):
    src, out = make_inputs(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    _, leftover = interrupted_write(out / "a.png")
    writer, live = interrupted_write(out / "b.png", hold=True)
    try:
        process_batch(plan_paths(src, out, "png")[:1], BicubicBackend(cfg), run_settings(cfg, "bicubic"))
        assert not leftover.exists() and live.exists()
    finally:
        writer.communicate(timeout=60)
