"""Settings-aware resume: every output records what made it, so a rerun redoes only what changed.

A record is a small JSON file in a hidden ``.sr-records`` folder beside the output, written atomically
after the output itself (a crash in between leaves an output without a record, which is redone). It
holds the sha256 of the input's bytes, the backend's identity (the sha256 of every weight file, runtime,
precision, device kind) and the settings that change the output file as they apply to this input and
output (:meth:`RunSettings.record`: the tile size used, the format written).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from datapipe.image_io import write_atomic

RECORDS_DIR = ".sr-records"
VERSION = 2  # 2: weight sha256s, runtime, precision, the written format and the tile size used


def record_path(output: Path) -> Path:
    return output.parent / RECORDS_DIR / f"{output.name}.json"


def make_record(input_sha256: str, identity: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    return {"version": VERSION, "input_sha256": input_sha256, "made_by": identity, "settings": settings}


def write_record(output: Path, record: dict[str, Any]) -> None:
    write_atomic(record_path(output), json.dumps(record, indent=1, sort_keys=True).encode())


def read_record(output: Path) -> Optional[dict[str, Any]]:
    try:
        record = json.loads(record_path(output).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("version") == VERSION else None


def redo_reason(output: Path, wanted: dict[str, Any]) -> Optional[str]:
    """Why an existing ``output`` must be made again for the ``wanted`` record, or None to keep it."""
    old = read_record(output)
    if old is None:
        return "no record of how it was made"
    if old.get("input_sha256") != wanted["input_sha256"]:
        return "input changed"
    if old.get("made_by") != wanted["made_by"]:
        changed = _changed_keys(old.get("made_by"), wanted["made_by"])
        return f"model changed ({changed})"
    if old.get("settings") != wanted["settings"]:
        return f"settings changed ({_changed_keys(old.get('settings'), wanted['settings'])})"
    return None


def _changed_keys(old: Any, new: dict[str, Any]) -> str:
    old = old if isinstance(old, dict) else {}
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return ", ".join(keys)
