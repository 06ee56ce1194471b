"""The command line's batch run: progress bars, one line per problem, a summary and an exit code."""
from __future__ import annotations

import sys
import traceback
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig
from tqdm import tqdm

from datapipe.image_io import ImageError
from utils.backends import BACKENDS, BackendUnavailable, load_backend, resolve_backend_name
from utils.backends.invsr.weights import WeightsNotFound, download_weights
from utils.batch.naming import plan_paths
from utils.batch.ray_engine import RayEngine, RayEngineError
from utils.batch.runner import ERRORS_LOG, BatchItem, count_statuses, process_batch
from utils.config import ConfigError
from utils.settings import RunSettings

EXIT_OK, EXIT_FAILED_FILES, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SETUP_ERRORS = (BackendUnavailable, WeightsNotFound, ImageError, ConfigError, ValueError, KeyError, FileNotFoundError)


def fetch_invsr_weights(cfg: DictConfig) -> None:
    """Asked for InvSR explicitly: download its weights when they are missing and the hub is reachable."""
    status = BACKENDS["invsr"].availability(cfg)
    if status.ok:
        return
    print("[backend] InvSR weights are not available locally; trying to download them", file=sys.stderr)
    try:
        download_weights(cfg)
    except WeightsNotFound as exc:
        if str(exc) == status.reason:  # nothing to download (e.g. an explicit path is wrong)
            raise
        raise WeightsNotFound([status.reason.removeprefix("InvSR: "), str(exc).removeprefix("InvSR: ")]) from exc


def output_folder(out_path: Path) -> Path:
    return out_path.parent if out_path.suffix else out_path


def run_batch_command(cfg: DictConfig, in_path: Path, out_path: Path, recursive: bool = False,
                      overwrite: bool = False, debug: bool = False, engine: str = "local",
                      ray_address: Optional[str] = None, workers: Optional[int] = None) -> int:
    """Upscale a file or folder as ``cfg`` says; prints progress and a summary, returns the exit code
    (0 all done, 1 some files failed, 2 bad arguments before any work, 130 interrupted).

    ``engine`` "ray" runs the files on a Ray cluster (``ray_address``; none: an embedded local Ray)
    with ``workers`` actors, each loading the backend itself; the output is the same as "local"."""
    ray = None
    try:
        if cfg.backend == "invsr":
            fetch_invsr_weights(cfg)
        name, notice = resolve_backend_name(cfg)
        settings = RunSettings.from_config(cfg, name)
        pairs = plan_paths(in_path, out_path, settings.output_format, recursive)
        print(f"[backend] {notice}", file=sys.stderr)
        if engine == "ray":
            ray = RayEngine(ray_address)
        else:
            backend = load_backend(name, cfg)
    except (*SETUP_ERRORS, RayEngineError) as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE

    bar = tqdm(total=len(pairs), unit="img", desc="images", disable=None)

    def patch_bar(src: Path):
        inner = tqdm(total=0, unit="patch", desc=src.name, leave=False, disable=None)

        def update(done: int, total: int) -> None:
            inner.total = total
            inner.n = done
            inner.refresh()
            if done == total:
                inner.close()
        return update

    def report(item: BatchItem) -> None:
        bar.update(1)
        if item.status == "error":
            tqdm.write(f"error: {item.reason}", file=sys.stderr)
            if debug and item.traceback:
                tqdm.write(item.traceback, file=sys.stderr)
        elif item.reason:
            tqdm.write(f"{item.status}: {item.source.name}: {item.reason}", file=sys.stderr)

    errors_log = output_folder(out_path) / ERRORS_LOG
    try:
        if ray is not None:
            items = ray.run(pairs, name, cfg, settings, workers, overwrite, report, errors_log)
        else:
            items = process_batch(pairs, backend, settings, overwrite, patch_bar, report, errors_log)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; finished files are kept, rerun to continue", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RayEngineError as exc:  # e.g. a cluster node that cannot see the files: nothing was processed
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if ray is not None:
            ray.close()
    bar.close()
    print(summary_line(items, out_path), file=sys.stderr)
    if any(i.traceback for i in items):
        print(f"tracebacks of unexpected errors: {errors_log}", file=sys.stderr)
    return EXIT_FAILED_FILES if any(i.status == "error" for i in items) else EXIT_OK


def summary_line(items: list[BatchItem], out_path: Path) -> str:
    counts = count_statuses(items)
    seconds = sum(i.seconds for i in items if i.status == "ok")
    per_image = f", {seconds / counts['ok']:.2f} s per image" if counts["ok"] else ""
    return (f"done: {counts['ok']} written, {counts['skipped']} skipped (same input and settings), "
            f"{counts['error']} failed{per_image} → {out_path}")
