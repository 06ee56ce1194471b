"""The session's runs, newest first: what each one was made from (the input file and its sha256) and
with what, so that a run shown again brings its input back, "compare with the previous run" only
pairs runs of the same input bytes, and the list survives a reload (its metadata in the browser's
local storage; the files stay on the server as long as the studio keeps them)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from utils.studio.catalog import name
from utils.studio.words import LABELS

HISTORY_SIZE = 8                  # runs kept in a session's history
FILES = ("input", "result", "bicubic")


def entry(done, image: str) -> dict:
    """A finished run (a service SingleRun of ``image``, with the tile size it used): its files, a short title and a caption naming
    the model and the settings that tell two runs apart."""
    run = done.run
    title = f"{name(run.backend)} ×{run.outscale:g}"
    tiling = f"{LABELS['tile_size'].lower()} {run.tile_size}"
    if run.tile_margin is not None:
        tiling += f", {LABELS['overlap'].lower()} {run.tile_margin}"
    caption = (f"{title} · {tiling} · {LABELS['color_fix'].lower()} {run.color_fix} · {done.seconds:.1f} s · "
               f"{time.strftime('%H:%M:%S')}")
    return {"input": image, "sha256": done.input_sha256, "result": done.result, "bicubic": done.before,
            "title": title, "caption": caption, "info": done.info}


def added(runs: list[dict], new: dict) -> list[dict]:
    return [new, *runs][:HISTORY_SIZE]


def earlier_of_same_input(runs: list[dict], shown: Optional[int]) -> Optional[dict]:
    """The latest run before run ``shown`` made from the same input bytes, or None."""
    if shown is None or not 0 <= shown < len(runs):
        return None
    return next((r for r in runs[shown + 1:] if r["sha256"] == runs[shown]["sha256"]), None)


def still_there(saved) -> list[dict]:
    """The runs saved in the browser whose files the server still has (older ones were swept)."""
    if not isinstance(saved, list):
        return []
    return [r for r in saved if isinstance(r, dict) and all(r.get(k) and Path(r[k]).is_file() for k in FILES)]


def gallery(runs: list[dict]) -> list:
    return [(r["result"], r["caption"]) for r in runs]
