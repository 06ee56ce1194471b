"""Files in, files out: the per-file unit every engine runs (local loop, app, Ray actors) and the
local batch loop.

Per file: refuse writing over an input, decide from the resume record whether to (re)do it, read
(limits checked from the header), run the pipeline, write the output atomically, then its record.
One bad file never stops a batch: known input problems become one line; anything else also appends
its traceback to ``errors.log`` in the output folder so a real bug does not pass for a bad file.
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from datapipe.image_io import ImageError, image_size, output_format, read_image, remove_stale_parts, write_image
from utils.backends import Backend
from utils.config import ConfigError
from utils.pipeline.chain import Cancelled, RunInfo, upscale_image
from utils.pipeline.limits import LimitError
from utils.settings import RunSettings
from utils.batch.records import make_record, redo_reason, write_record
from utils.checksums import file_sha256
from utils.tiling.chopping import ProgressFn

ERRORS_LOG = "errors.log"
# Problems with an input or a setting that the user can act on: one line, no traceback.
EXPECTED_ERRORS = (ImageError, LimitError, ConfigError)
STATUSES = ("ok", "skipped", "error", "cancelled")


@dataclass
class BatchItem:
    source: Path
    output: Optional[Path]
    status: str           # ok | skipped | error | cancelled
    reason: str = ""
    seconds: float = 0.0
    traceback: str = ""   # set for unexpected errors only


def describe_error(src: Path, exc: BaseException) -> str:
    """One line naming the file and the reason."""
    if isinstance(exc, ImageError):
        return str(exc)
    if isinstance(exc, MemoryError):
        return f"{src.name}: out of memory; lower the tile size or the input size"
    if isinstance(exc, EXPECTED_ERRORS):
        return f"{src.name}: {exc}"
    return f"{src.name}: unexpected {type(exc).__name__}: {exc}"


def process_file(src: Path, dst: Path, backend: Backend, settings: RunSettings,
                 progress: Optional[ProgressFn] = None, record: Optional[dict] = None) -> RunInfo:
    """Read ``src``, upscale, write ``dst`` atomically, then its resume ``record`` (if given)."""
    img = read_image(src, max_pixels=settings.max_input_pixels)
    result, info = upscale_image(img, backend, settings, progress)
    write_image(dst, result, quality=settings.quality)
    if record is not None:
        write_record(dst, record)
    return info


def process_one(src: Path, dst: Path, backend: Backend, settings: RunSettings, overwrite: bool = False,
                progress: Optional[ProgressFn] = None, inputs: frozenset[Path] = frozenset()) -> BatchItem:
    """One file of a batch, never raising except :class:`Cancelled`. ``inputs``: resolved paths of the
    batch's inputs, none of which may be written."""
    if dst.resolve() in inputs or (dst.exists() and dst.resolve() == src.resolve()):
        return BatchItem(src, None, "error", f"{src.name}: the output {dst} is an input file; choose another "
                                             "output folder")
    try:
        wanted = make_record(input_digest(src), backend.identity, effective_record(src, dst, settings))
        reason = "" if not dst.exists() else ("redone: overwrite" if overwrite else redo_reason(dst, wanted))
        if reason is None:
            return BatchItem(src, dst, "skipped", "same input and settings")
        if reason and not reason.startswith("redone"):
            reason = f"redone: {reason}"
        info = process_file(src, dst, backend, settings, progress, wanted)
        return BatchItem(src, dst, "ok", "; ".join(filter(None, [reason, *info.notes])), info.seconds)
    except Cancelled:
        raise
    except EXPECTED_ERRORS as exc:
        return BatchItem(src, None, "error", describe_error(src, exc))
    except Exception as exc:  # one bad file must not stop the batch; the traceback is kept
        return BatchItem(src, None, "error", describe_error(src, exc), traceback=traceback.format_exc())


def effective_record(src: Path, dst: Path, settings: RunSettings) -> dict:
    """The record of the settings as they will apply to ``src`` (the tile size the backend uses for its
    size) and to ``dst`` (the format its extension names)."""
    w, h = image_size(src, settings.max_input_pixels)
    return settings.for_input(h, w).record(output_format(dst).lower())


def input_digest(src: Path) -> str:
    """sha256 of the input's bytes; an unreadable input is an input problem, not a bug."""
    try:
        return file_sha256(src)
    except FileNotFoundError:
        raise ImageError(src, "file not found") from None
    except OSError as exc:
        raise ImageError(src, f"cannot read the file ({exc.strerror or exc})") from None


def log_errors(items: Iterable[BatchItem], log: Path) -> None:
    """Append the traceback of every unexpected error to ``log``."""
    entries = [f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {i.source}\n{i.traceback}" for i in items if i.traceback]
    if entries:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write("".join(entries))


def process_batch(pairs: list[tuple[Path, Path]], backend: Backend, settings: RunSettings, overwrite: bool = False,
                  patch_progress: Optional[Callable[[Path], Optional[ProgressFn]]] = None,
                  on_item: Optional[Callable[[BatchItem], None]] = None,
                  errors_log: Optional[Path] = None) -> list[BatchItem]:
    """Process every pair in order (resume: finished outputs made from the same input with the same
    settings are skipped unless ``overwrite``). Unexpected errors' tracebacks go to ``errors_log``.
    Cancellation (``Cancelled`` from a progress callback) propagates after the finished files."""
    inputs = frozenset(src.resolve() for src, _ in pairs)
    for folder in {dst.parent for _, dst in pairs}:
        if folder.is_dir():
            remove_stale_parts(folder)
    items = []
    for src, dst in pairs:
        item = process_one(src, dst, backend, settings, overwrite,
                           patch_progress(src) if patch_progress else None, inputs)
        items.append(item)
        if errors_log is not None:
            log_errors([item], errors_log)
        if on_item is not None:
            on_item(item)
    return items


def count_statuses(items: Iterable[BatchItem]) -> dict[str, int]:
    items = list(items)
    return {s: sum(i.status == s for i in items) for s in STATUSES}
