"""Append-only CSV logs (one row per optimizer step or validation), readable while training runs."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence


class CsvLog:
    """Rows of fixed ``fields``; the header is written when the file is new or empty, so a resumed run
    keeps appending to the same file. Floats are written with 6 significant digits, NaN as empty."""

    def __init__(self, path: Path, fields: Sequence[str]):
        self.path, self.fields = Path(path), tuple(fields)

    def write(self, row: Mapping[str, object]) -> None:
        unknown = set(row) - set(self.fields)
        if unknown:
            raise KeyError(f"{self.path.name}: unknown columns {sorted(unknown)}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.is_file() or self.path.stat().st_size == 0
        with open(self.path, "a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.fields)
            if new:
                writer.writeheader()
            writer.writerow({k: _cell(row.get(k)) for k in self.fields})


def _cell(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return "" if value is None else value
