"""The studio's request service: what the Single image and Batch tabs (and the API) do on the server.

It turns a request's settings into a run (the same config → RunSettings path as the CLI), confines
batch folders to the batch root, keeps one folder per request (swept after an hour, never while in
use) and lets a session cancel its running jobs between patches.
"""
from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterator, Optional

import gradio as gr
import numpy as np
from omegaconf import DictConfig
from PIL import Image

from datapipe.image_io import (IMAGE_EXTENSIONS, ImageError, image_size, is_image_file, list_images, read_image,
                               write_image)
from utils.backends import BACKENDS, BackendUnavailable, load_backend, resolve_backend_name
from utils.batch.naming import output_name, plan_outputs, plan_paths
from utils.batch.ray_engine import RayEngine, RayEngineError
from utils.batch.runner import ERRORS_LOG, BatchItem, count_statuses, describe_error, process_batch
from utils.config import ConfigError
from utils.evaluation.niqe import ImageTooSmall, niqe
from utils.pipeline.chain import Cancelled, bicubic_reference, to_array, to_tensor, upscale_image
from utils.pipeline.limits import LimitError
from utils.settings import RunSettings
from utils.studio.paths import PathRefused, extract_zip, is_inside, resolve_folder
from utils.studio.calibration import calibrate
from utils.studio.catalog import unavailable_line
from utils.studio.estimates import estimate
from utils.settings import unread_message, unread_settings
from utils.studio.progress import ProgressLine
from utils.studio.settings import Settings, config_for, scale_label
from utils.studio.words import in_words, reason_in_words

log = logging.getLogger("sr-studio")

CANCELLING = "Cancelling: the run stops after the current tile."
RESULT_TTL_SECONDS = 3600         # per-request folders older than this are removed
ZIP_MAX_MEMBERS = 10_000
ZIP_MAX_BYTES = 1024 ** 3         # uncompressed, per uploaded zip
ESTIMATE_SIZE = 512               # the image side the estimate assumes before one is uploaded
NIQE_MAX_PIXELS = 16_000_000      # larger results are not scored: NIQE holds several float64 copies
# Smaller results are not scored: NIQE compares statistics of 96×96 blocks, and a handful of them say
# more about the blocks than about the image (a 128² result scored worse than its bicubic upscale).
NIQE_MIN_SIDE = 192
NIQE_NOTE = ("NIQE: how natural the pixel statistics look, lower is more natural; it does not measure "
             "faithfulness to the input")


@dataclass(frozen=True)
class SingleRun:
    """A finished (or cancelled: no files) single-image run."""

    run: RunSettings
    info: str
    result: Optional[str] = None
    before: Optional[str] = None   # the bicubic upscale at the result's size
    seconds: float = 0.0
    input_sha256: str = ""         # runs of the same bytes can be compared with each other

    @property
    def cancelled(self) -> bool:
        return self.result is None


def scoreable(width: int, height: int) -> bool:
    """Whether NIQE means something for a result of this size (and fits in memory)."""
    return min(width, height) >= NIQE_MIN_SIDE and width * height <= NIQE_MAX_PIXELS


def niqe_text(rgb: np.ndarray) -> str:
    """NIQE of an H×W×3 image in [0, 1] (lower is more natural) to two decimals; "" where it means nothing
    (:func:`scoreable`) or cannot be computed here."""
    if not scoreable(rgb.shape[1], rgb.shape[0]):
        return ""
    try:
        return f"{niqe(rgb):.2f}"
    except ImageTooSmall:
        return ""
    except FileNotFoundError as exc:  # the pristine model is not installed
        log.warning("%s", exc)
        return ""


def niqe_of_file(path: Path) -> str:
    """:func:`niqe_text` of an image file as it was written (colour only; alpha is not scored)."""
    try:
        width, height = image_size(path)
        return niqe_text(read_image(path).rgb) if scoreable(width, height) else ""
    except ImageError:
        return ""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def user_error(message: str) -> gr.Error:
    """An error shown to the user; expected (bad input, refused path), so no traceback in the log."""
    return gr.Error(message, print_exception=False)


class Studio:
    """Server-side state shared by all sessions: the base config, folders, and cancel flags."""

    def __init__(self, cfg, default_backend: str, batch_root: Path, output_root: Path, tmp_root: Path,
                 ray_engine: Optional[RayEngine] = None):
        self.cfg = cfg
        self.ray = ray_engine  # when set, batches run on Ray actors (which load the models themselves)
        self.default_backend = default_backend
        self.batch_root = batch_root
        self.output_root = output_root
        self.tmp_root = tmp_root
        self._cancel: dict[str, set[threading.Event]] = {}  # session → flags of its running jobs
        self._in_use: set[Path] = set()                      # request folders of running requests
        self._lock = threading.Lock()

    # ---- helpers ---------------------------------------------------------------------------------

    def check(self, settings: dict) -> tuple[str, DictConfig, RunSettings]:
        """(backend name, config, run settings) for a request's settings, or a gr.Error with one line
        saying what is wrong: the one validation, before any model is loaded."""
        s = _settings(settings)
        try:
            name, _ = resolve_backend_name(self.cfg, s.backend)
        except BackendUnavailable as exc:
            known = s.backend in BACKENDS
            raise user_error(unavailable_line(s.backend, BACKENDS[s.backend].availability(self.cfg))
                             if known else str(exc)) from None
        return (name, *self._configure(s, name))

    def _configure(self, s: Settings, name: str) -> tuple[DictConfig, RunSettings]:
        refused = [unread_message(setting, name) for setting in unread_settings(vars(s), name)]
        if refused:
            raise user_error(in_words("; ".join(refused), name))
        try:
            cfg = config_for(self.cfg, s, name)
            return cfg, RunSettings.from_config(cfg, name)
        except (ConfigError, KeyError) as exc:
            raise user_error("; ".join(in_words(part, name) for part in str(exc).split("; "))) from None

    def _prepare(self, settings: dict):
        """(loaded backend, run settings) for the request's settings, or a gr.Error saying what is wrong.
        A model used here for the first time is timed first, for the estimates."""
        name, cfg, run = self.check(settings)
        backend = self._load(name, cfg)
        calibrate(backend, run)
        return backend, run

    @staticmethod
    def _load(name: str, cfg: DictConfig):
        try:
            return load_backend(name, cfg)
        except Exception as exc:  # missing weights, a broken install: tell the user, keep serving
            log.exception("cannot start the %s backend", name)
            raise gr.Error(f"cannot start the {name} backend: {exc}") from exc

    @contextmanager
    def _request_dir(self) -> Iterator[Path]:
        """A fresh folder for one request's files. Folders of finished requests older than the TTL are
        removed; a folder stays protected while its request runs, however long that takes."""
        cutoff = time.time() - RESULT_TTL_SECONDS
        with self._lock:
            for old in self.tmp_root.iterdir():
                if old not in self._in_use and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            folder = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.tmp_root))
            self._in_use.add(folder)
        try:
            yield folder
        finally:
            with self._lock:
                self._in_use.discard(folder)

    @contextmanager
    def _cancel_flag(self, request: gr.Request, flag: threading.Event) -> Iterator[threading.Event]:
        """``flag`` registered as a cancel flag of this session while its job runs."""
        key = request.session_hash
        with self._lock:
            self._cancel.setdefault(key, set()).add(flag)
        try:
            yield flag
        finally:
            with self._lock:
                self._cancel[key].discard(flag)
                if not self._cancel[key]:
                    del self._cancel[key]

    @staticmethod
    def _patch_progress(line: ProgressLine, flag: threading.Event, index: int, label: str):
        """Progress callback for one image's tiles, reported into the job's line; raising Cancelled
        stops before the next tile."""
        def update(done: int, total: int) -> None:
            if flag.is_set():
                raise Cancelled()
            line.report(index, done, total, label)
        if flag.is_set():
            raise Cancelled()
        return update

    # ---- events ----------------------------------------------------------------------------------

    def cancel(self, request: gr.Request) -> str:
        with self._lock:
            flags = list(self._cancel.get(request.session_hash, ()))
        for flag in flags:
            flag.set()
        if not flags:
            return "Nothing is running in this session."
        return CANCELLING

    def estimate(self, image: Optional[str], settings: dict) -> str:
        """"≈ 9 tiles of 416×416 px, ≈ 40 s on this machine for this 640×480 image" (or for a 512×512
        image before one is uploaded), also for a backend that cannot run here (to see what it would
        cost); a gr.Error when the settings are invalid."""
        s = _settings(settings)
        name = s.backend if s.backend in BACKENDS else self.check(settings)[0]
        _, run = self._configure(s, name)
        try:
            width, height = image_size(image) if image else (ESTIMATE_SIZE, ESTIMATE_SIZE)
        except ImageError as exc:
            raise user_error(str(exc)) from None
        subject = f"this {width}×{height} image" if image else f"a {width}×{height} image"
        return f"{estimate(height, width, run).text()} on this machine for {subject}"

    def run_single(self, image: str, request: gr.Request, line: ProgressLine, **settings) -> "SingleRun":
        """Upscale one image and write the result in the chosen format and scale, named with the
        backend and scale, beside the bicubic upscale the slider compares it with; progress goes into
        ``line``."""
        if not image:
            raise user_error("Upload an image first.")
        src = Path(image)
        backend, run = self._prepare(settings)
        try:
            img = read_image(src, max_pixels=run.max_input_pixels)
        except ImageError as exc:
            raise user_error(str(exc)) from None
        line.begin(1, estimate(img.height, img.width, run).seconds)
        with self._cancel_flag(request, line.stop) as flag:
            try:
                result, info = upscale_image(img, backend, run, self._patch_progress(line, flag, 0, ""))
            except Cancelled:
                return SingleRun(run, f"Cancelled {src.name}: nothing was written.")
            except (LimitError, ConfigError) as exc:
                raise user_error(in_words(describe_error(src, exc), run.backend)) from None
            except Exception as exc:  # a failed run must reach the user and the log, not kill the server
                log.exception("upscaling %s failed", src.name)
                raise gr.Error(describe_error(src, exc)) from exc
        with self._request_dir() as out_dir:
            tagged = src.with_name(f"{src.stem}_{run.backend}_{scale_label(run.outscale)}{src.suffix}")
            result_path = write_image(out_dir / output_name(tagged, run.output_format), result, quality=run.quality)
            # The slider's "before": the input bicubic-upscaled to the result's size (display only, so JPEG).
            before_rgb = to_array(bicubic_reference(to_tensor(img.rgb), (result.height, result.width)).clamp(0, 1))
            before_path = write_image(out_dir / "bicubic.jpg", img.with_pixels(before_rgb, None), quality=90)
        summary = info.summary()
        if run.outscale != info.scale:
            summary = summary.replace(f"×{info.scale}", f"×{info.scale} → resized to ×{run.outscale:g}", 1)
        if settings.get("niqe") and scoreable(result.width, result.height):
            # Both before encoding, so neither is scored with the other's compression.
            summary += f" · NIQE bicubic {niqe_text(before_rgb)} → result {niqe_text(result.rgb)} (lower: more natural)"
        return SingleRun(run.for_input(img.height, img.width), summary, str(result_path), str(before_path),
                         info.seconds, sha256_of(src))

    def upscale(self, image: str, request: gr.Request, progress=gr.Progress(), **settings):
        """One image → ((bicubic, result) for the slider, the result file, info line)."""
        done = self.run_single(image, request, ProgressLine(progress), **settings)
        if done.cancelled:
            return gr.skip(), gr.skip(), done.info
        return (done.before, done.result), done.result, done.info

    def matched(self, before: str, after: str) -> tuple[str, str]:
        """(before, after) for the comparison slider, ``before`` resized to ``after``'s size when they
        differ (a previous run at another scale)."""
        with Image.open(before) as b, Image.open(after) as a:
            if b.size == a.size:
                return before, after
            with self._request_dir() as folder:
                resized = folder / f"{Path(before).stem}_{a.width}x{a.height}.png"
                b.convert("RGB").resize(a.size, Image.Resampling.LANCZOS).save(resized)
        return str(resized), after

    def zoom(self, before: str, after: str, centre: tuple[float, float], size: int) -> tuple[str, str]:
        """size×size crops at 100 % (one image pixel per screen pixel) of two equally large images around
        ``centre`` (fractions of the width and height), for a close look at the same region."""
        with self._request_dir() as folder, Image.open(before) as b, Image.open(after) as a:
            left = min(max(round(centre[0] * a.width) - size // 2, 0), max(a.width - size, 0))
            top = min(max(round(centre[1] * a.height) - size // 2, 0), max(a.height - size, 0))
            box = (left, top, min(left + size, a.width), min(top + size, a.height))
            crops = []
            for tag, im in (("before", b), ("after", a)):
                crops.append(folder / f"zoom_{tag}.png")
                im.crop(box).save(crops[-1])
        return str(crops[0]), str(crops[1])

    def batch(self, files: Optional[list[str]] = None, folder: Optional[str] = None, overwrite: bool = False,
              request: gr.Request = None, progress=gr.Progress(), **settings):
        """Uploaded files/zips or a folder in the batch root → (status table, zip of results, summary)."""
        return self.run_batch(files, folder, overwrite, request, ProgressLine(progress), **settings)

    def run_batch(self, files: Optional[list[str]], folder: Optional[str], overwrite: bool, request: gr.Request,
                  line: ProgressLine, **settings):
        """:meth:`batch` with its progress reported into ``line``."""
        folder = (folder or "").strip()
        if files and folder:
            raise user_error("Give either uploaded files or a folder name, not both.")
        if not files and not folder:
            raise user_error("Upload images (or a zip), or name a folder inside the batch root.")
        name, cfg, run = self.check(settings)
        backend = None if self.ray is not None else self._load(name, cfg)
        if backend is not None:
            calibrate(backend, run)
        with self._request_dir() as req_dir:
            return self._run_batch(files, folder, bool(overwrite), backend, cfg, run, req_dir, request, line,
                                   bool(settings.get("niqe")))

    def _run_batch(self, files, folder, overwrite, backend, cfg, run, req_dir, request, line, score):
        try:
            if folder:
                in_dir, out_dir, pairs, refused = self._folder_inputs(folder, run)
                title = out_dir.name.removesuffix(f"_{run.backend}_{scale_label(run.outscale)}")
            else:
                in_dir, out_dir, pairs, refused = self._upload_inputs(files, run, req_dir)
                title = Path(files[0]).stem if len(files) == 1 else "upload"
        except (PathRefused, ImageError, OSError) as exc:
            raise user_error(str(exc)) from None
        if not pairs and not refused:
            raise user_error(f"no images found in {folder or 'the upload'} ({', '.join(IMAGE_EXTENSIONS)})")
        done: list[BatchItem] = list(refused)
        index = {src: i for i, (src, _) in enumerate(pairs)}
        line.begin(len(pairs), label=f"file 1/{len(pairs)} · ")
        cancelled = False

        def logged(item: BatchItem) -> None:
            if item.traceback:
                log.error("batch file %s failed unexpectedly:\n%s", item.source, item.traceback)
            done.append(item)

        with self._cancel_flag(request, line.stop) as flag:
            if self.ray is not None:
                cancelled = self._run_on_ray(pairs, cfg, run, overwrite, logged, out_dir, flag, line)
            else:
                def patch_progress(src: Path):
                    label = f"file {index[src] + 1}/{len(pairs)} {src.name} · "
                    return self._patch_progress(line, flag, index[src], label)
                try:
                    process_batch(pairs, backend, run, overwrite, patch_progress, logged, out_dir / ERRORS_LOG)
                except Cancelled:
                    cancelled = True
        finished = {item.source for item in done}
        done += [BatchItem(src, None, "cancelled", "not processed") for src, _ in pairs if src not in finished]
        # Scored from the files as written (after the batch, so the Ray workers need no NIQE model).
        rows = [[_display_name(i.source, in_dir), i.status, reason_in_words(i.reason), round(i.seconds, 2),
                 niqe_of_file(i.output) if score and i.output is not None else ""] for i in done]
        outputs = [i.output for i in done if i.status in ("ok", "skipped") and i.output is not None]
        archive_name = f"{title}_{run.backend}_{scale_label(run.outscale)}.zip"
        archive = _zip_results(outputs, out_dir, req_dir / archive_name) if outputs else None
        counts = count_statuses(done)
        # Names the user knows: the output folder below the output root (not a server path), the zip.
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        if folder:
            summary += f" → {self.output_root.name}/{out_dir.relative_to(self.output_root)}"
        if archive:
            summary += f"; zip: {archive_name}" if folder else f" → {archive_name}"
        if cancelled:
            summary = "Cancelled; finished files are kept, rerun to continue. " + summary
        return rows, (str(archive) if archive else None), summary

    def _run_on_ray(self, pairs, cfg, run, overwrite, logged, out_dir, flag, line) -> bool:
        """The batch on the Ray engine, progress per finished file; True when it was cancelled (files
        not started come back ``cancelled``)."""
        finished = 0

        def arrived(item: BatchItem) -> None:
            nonlocal finished
            logged(item)
            finished += 1
            line.report(finished, 0, 0, label=f"file {finished}/{len(pairs)} done · ")

        try:
            self.ray.run(pairs, run.backend, cfg, run, overwrite=overwrite, on_item=arrived,
                         errors_log=out_dir / ERRORS_LOG, stop=flag)
        except RayEngineError as exc:
            raise user_error(str(exc)) from None
        return flag.is_set()

    def _folder_inputs(self, folder: str, run: RunSettings):
        """(input folder, output folder, (source, output) pairs, refused items) for a folder named inside
        the batch root; results go to a new folder under the output root, one per model and scale (so
        inputs are never overwritten and two models' results coexist), with its own resume records."""
        src_dir = resolve_folder(self.batch_root, folder)
        rel = src_dir.relative_to(self.batch_root.resolve())
        out_dir = self.output_root / rel.parent / (f"{rel.name or self.batch_root.name}_{run.backend}_"
                                                   f"{scale_label(run.outscale)}")
        # A file symlinked from outside the root would otherwise be read; report it instead.
        sources, refused = [], []
        for src in list_images(src_dir):
            if is_inside(src, self.batch_root):
                sources.append(src)
            else:
                refused.append(BatchItem(src, None, "error",
                                         f"{src.name}: a symbolic link leading outside the batch root; refused"))
        return src_dir, out_dir, plan_outputs(sources, out_dir, run.output_format), refused

    @staticmethod
    def _upload_inputs(files: list[str], run: RunSettings, req_dir: Path):
        """Like _folder_inputs for uploaded images and zips, gathered in one request folder (zips extracted
        safely, sub-folders mirrored in the results)."""
        in_dir, out_dir = req_dir / "inputs", req_dir / "results"
        in_dir.mkdir()
        refused = []
        for f in map(Path, files):
            if f.suffix.lower() == ".zip":
                extract_zip(f, in_dir / f.stem, ZIP_MAX_BYTES, ZIP_MAX_MEMBERS, keep=_wanted_member)
            elif is_image_file(f):
                shutil.copy2(f, _free_name(in_dir / f.name))
            else:
                refused.append(BatchItem(f, None, "error", f"{f.name}: not an image or a zip archive"))
        pairs = plan_paths(in_dir, out_dir, run.output_format, recursive=True) if list_images(in_dir, True) else []
        return in_dir, out_dir, pairs, refused


def _settings(values: dict) -> Settings:
    try:
        return Settings(**values)
    except TypeError as exc:  # an unknown or missing setting name
        raise user_error(str(exc)) from None


def _wanted_member(name: str) -> bool:
    """Image members of an uploaded zip, minus macOS resource forks and hidden files."""
    parts = PurePath(name).parts
    return is_image_file(Path(name)) and not any(p.startswith((".", "__MACOSX")) for p in parts)


def _free_name(path: Path) -> Path:
    """``path``, or ``stem-2.ext``, ``stem-3.ext``… if it exists (two uploads with one name)."""
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate


def _display_name(src: Path, base: Path) -> str:
    try:
        return str(src.relative_to(base))
    except ValueError:
        return src.name


def _zip_results(outputs: list[Path], out_dir: Path, archive: Path) -> Path:
    # Images are already compressed; storing them avoids burning CPU the model needs.
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in outputs:
            zf.write(path, _display_name(path, out_dir))
    return archive
