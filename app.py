#!/usr/bin/env python
"""Super-resolution studio: a Gradio app (and HTTP API) over the same pipeline as the CLI.

    python app.py                               # http://127.0.0.1:7860, offline default backend
    python app.py --batch-root ~/photos --concurrency 1 --max-queue 20

Layout: shared settings on the left (one set of controls feeding both tabs and the API), the Single
image and Batch tabs on the right, a Models panel saying which backends can run here. Every model run
goes through the queue under one concurrency group, so --concurrency bounds both tabs together.
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network calls

import argparse
import atexit
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Iterator, Optional

import gradio as gr

from datapipe.image_io import IMAGE_EXTENSIONS, ImageError, is_image_file, list_images, read_image, write_image
from inference_invsr import COLOR_FIXES, plan
from utils.app_settings import (CHOPPING_SIZES, FORMATS, FUSION_METHODS, INVSR_ONLY, MAX_OVERLAP_RANGE,
                                MIN_OVERLAP_RANGE, OUTSCALE_RANGE, Settings, config_for, scale_label)
from utils.backends import BACKENDS, BackendUnavailable, backend_status, create_backend, resolve_backend_name
from utils.config import load_config, with_overrides
from utils.paths import PathRefused, extract_zip, is_inside, resolve_folder
from utils.pipeline import (BatchItem, Cancelled, bicubic_reference, check_stages, describe_error,
                            plan_outputs, process_batch, to_array, to_tensor, upscale_image)

MODEL_GROUP = "model"             # one concurrency group for every event that runs a model
RESULT_TTL_SECONDS = 3600         # per-request folders older than this are removed
ZIP_MAX_MEMBERS = 10_000
ZIP_MAX_BYTES = 1024 ** 3         # uncompressed, per uploaded zip
TABLE_HEADERS = ["file", "status", "reason", "seconds"]


def user_error(message: str) -> gr.Error:
    """An error shown to the user; expected (bad input, refused path), so no traceback in the log."""
    return gr.Error(message, print_exception=False)


class ImageUpload(gr.Image):
    """gr.Image that hands over the uploaded file untouched.

    Stock gr.Image opens the upload with PIL first, so a corrupt file fails inside Gradio with a
    generic error and some modes are re-encoded; here datapipe.read_image does all decoding, keeping
    16-bit/alpha/EXIF and turning a bad file into a gr.Error that names it.
    """

    is_template = True  # reuse gr.Image's front-end

    def preprocess(self, payload):
        if payload is None or (payload.url or "").startswith("data:"):
            return super().preprocess(payload)
        return payload.path


class Studio:
    """Server-side state shared by all sessions: the base config, folders, and cancel flags."""

    def __init__(self, cfg, default_backend: str, batch_root: Path, output_root: Path):
        self.cfg = cfg
        self.default_backend = default_backend
        self.batch_root = batch_root
        self.output_root = output_root
        self.tmp_root = Path(tempfile.mkdtemp(prefix="sr-studio-"))
        atexit.register(shutil.rmtree, self.tmp_root, True)
        self._cancel: dict[str, set[threading.Event]] = {}  # session → flags of its running jobs
        self._lock = threading.Lock()

    # ---- helpers ---------------------------------------------------------------------------------

    def _prepare(self, settings: dict):
        """(backend name, run config) for the given settings, or a gr.Error."""
        try:
            s = Settings(**settings)
            name, _ = resolve_backend_name(self.cfg, s.backend)
            cfg = config_for(self.cfg, s, name)
            check_stages(cfg, name)
            return name, cfg
        except (BackendUnavailable, ValueError, KeyError, TypeError) as exc:
            raise user_error(str(exc)) from None

    @staticmethod
    def _backend(name: str, cfg):
        """The (cached) backend; loading it is the slow part, so it happens after inputs are checked."""
        try:
            return create_backend(name, cfg)
        except Exception as exc:  # missing weights, a broken install: tell the user, keep serving
            raise gr.Error(f"cannot start the {name} backend: {exc}") from exc

    def _request_dir(self) -> Path:
        """A fresh folder for one request's files; stale ones from earlier requests are removed."""
        cutoff = time.time() - RESULT_TTL_SECONDS
        for old in self.tmp_root.iterdir():
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old, ignore_errors=True)
        return Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=self.tmp_root))

    @contextmanager
    def _cancel_flag(self, request: gr.Request) -> Iterator[threading.Event]:
        """A cancel flag for one job of this session, registered only while the job runs."""
        key, flag = request.session_hash, threading.Event()
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
    def _patch_progress(progress: gr.Progress, flag: threading.Event, index: int, count: int, label: str):
        """Progress callback for one image's patches; raising Cancelled stops before the next patch."""
        def update(done: int, total: int) -> None:
            if flag.is_set():
                raise Cancelled()
            progress((index + done / max(total, 1)) / count, desc=f"{label}: patch {done}/{total}")
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
        return "Cancelling: the run stops after the current patch."

    def upscale(self, image: str, request: gr.Request, progress=gr.Progress(), **settings):
        """One image → ((bicubic, result) for the slider, lossless PNG path, info line)."""
        if not image:
            raise user_error("Upload an image first.")
        src = Path(image)
        name, cfg = self._prepare(settings)
        try:
            img = read_image(src, max_pixels=cfg.limits.max_input_pixels)
        except ImageError as exc:
            raise user_error(str(exc)) from None
        backend = self._backend(name, cfg)
        with self._cancel_flag(request) as flag:
            try:
                result, info = upscale_image(img, cfg, backend,
                                             self._patch_progress(progress, flag, 0, 1, src.name))
            except Cancelled:
                return gr.skip(), gr.skip(), f"Cancelled {src.name}: nothing was written."
            except Exception as exc:  # a failed run must reach the user (cause logged), not kill the server
                raise gr.Error(describe_error(src, exc)) from exc
        out_dir = self._request_dir()
        result_path = write_image(out_dir / f"{src.stem}_{scale_label(cfg.outscale)}.png", result)
        # The slider's "before": the input bicubic-upscaled to the result's size (display only, so JPEG).
        before_rgb = to_array(bicubic_reference(to_tensor(img.rgb), (result.height, result.width)))
        before_path = write_image(out_dir / "bicubic.jpg", img.with_pixels(before_rgb, None), quality=90)
        return (str(before_path), str(result_path)), str(result_path), f"×{cfg.outscale:g} · {info.summary()}"

    def batch(self, files: Optional[list[str]] = None, folder: Optional[str] = None, overwrite: bool = False,
              request: gr.Request = None, progress=gr.Progress(), **settings):
        """Uploaded files/zips or a folder in the batch root → (status table, zip of results, summary)."""
        folder = (folder or "").strip()
        if files and folder:
            raise user_error("Give either uploaded files or a folder name, not both.")
        if not files and not folder:
            raise user_error("Upload images (or a zip), or name a folder inside the batch root.")
        name, cfg = self._prepare(settings)
        req_dir = self._request_dir()
        try:
            if folder:
                in_dir, out_dir, pairs, refused = self._folder_inputs(folder, cfg)
            else:
                in_dir, out_dir, pairs, refused = self._upload_inputs(files, cfg, req_dir)
        except (PathRefused, ImageError, OSError) as exc:
            raise user_error(str(exc)) from None
        if not pairs and not refused:
            raise user_error(f"no images found in {folder or 'the upload'} ({', '.join(IMAGE_EXTENSIONS)})")
        backend = self._backend(name, cfg)
        done: list[BatchItem] = list(refused)
        index = {src: i for i, (src, _) in enumerate(pairs)}
        cancelled = False
        with self._cancel_flag(request) as flag:
            def patch_progress(src: Path):
                return self._patch_progress(progress, flag, index[src], len(pairs), src.name)
            try:
                process_batch(pairs, cfg, backend, bool(overwrite), patch_progress, done.append)
            except Cancelled:
                cancelled = True
        finished = {item.source for item in done}
        done += [BatchItem(src, None, "cancelled", "not processed") for src, _ in pairs if src not in finished]
        rows = [[_display_name(i.source, in_dir), i.status, i.reason, round(i.seconds, 2)] for i in done]
        outputs = [i.output for i in done if i.status in ("ok", "skipped") and i.output is not None]
        archive = _zip_results(outputs, out_dir, req_dir / f"{out_dir.name}.zip") if outputs else None
        counts = {s: sum(i.status == s for i in done) for s in ("ok", "skipped", "error", "cancelled")}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" → {out_dir}"
        if cancelled:
            summary = "Cancelled; finished files are kept, rerun to continue. " + summary
        return rows, (str(archive) if archive else None), summary

    def _folder_inputs(self, folder: str, cfg):
        """(input folder, output folder, (source, output) pairs, refused items) for a folder named inside
        the batch root; results go to a new folder under the output root, so inputs are never overwritten."""
        src_dir = resolve_folder(self.batch_root, folder)
        rel = src_dir.relative_to(self.batch_root.resolve())
        out_dir = self.output_root / rel.parent / f"{rel.name or self.batch_root.name}_{scale_label(cfg.outscale)}"
        # A file symlinked from outside the root would otherwise be read; report it instead.
        sources, refused = [], []
        for src in list_images(src_dir):
            if is_inside(src, self.batch_root):
                sources.append(src)
            else:
                refused.append(BatchItem(src, None, "error",
                                         f"{src.name}: a symbolic link leading outside the batch root; refused"))
        return src_dir, out_dir, plan_outputs(sources, out_dir, cfg.output.format), refused

    @staticmethod
    def _upload_inputs(files: list[str], cfg, req_dir: Path):
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
        pairs = plan(in_dir, out_dir, cfg.output.format, recursive=True) if list_images(in_dir, True) else []
        return in_dir, out_dir, pairs, refused


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


# ---- UI ------------------------------------------------------------------------------------------

def models_markdown(cfg, default: str) -> str:
    """Which backends can run on this machine, and for those that cannot, why."""
    lines = [f"- **{name}**: " + ("available" if av.ok else f"not available. {av.reason}")
             for name, av in backend_status(cfg).items()]
    return "\n".join(lines) + f"\n\nDefault backend: **{default}**."


def settings_panel(defaults: Settings, choices: list[str]) -> dict[str, gr.components.Component]:
    """Build the settings controls once; the dict (API parameter name → control) feeds every event."""
    invsr = defaults.backend == "invsr"
    c: dict[str, gr.components.Component] = {}
    c["backend"] = gr.Dropdown(choices, value=defaults.backend, label="Backend")
    hint = gr.Markdown("*Steps, timesteps, adaptive scheduler, adaptive guidance and seed apply to InvSR only.*",
                       visible=not invsr)
    with gr.Row():
        c["num_steps"] = gr.Slider(1, 5, value=defaults.num_steps, step=1, label="Steps", interactive=invsr)
        c["seed"] = gr.Number(defaults.seed, precision=0, label="Seed", interactive=invsr)
    c["timesteps"] = gr.Textbox(defaults.timesteps, label="Custom timesteps", interactive=invsr,
                                placeholder="e.g. 200,100,50 (empty: the default for the number of steps)")
    with gr.Row():
        c["adaptive_scheduler"] = gr.Checkbox(defaults.adaptive_scheduler, label="Adaptive scheduler",
                                              interactive=invsr)
        c["adaptive_guidance"] = gr.Checkbox(defaults.adaptive_guidance, label="Adaptive guidance",
                                             interactive=invsr)
    c["chopping_size"] = gr.Radio(list(CHOPPING_SIZES), value=defaults.chopping_size,
                                  label="Chopping size (input pixels)")
    c["color_fix"] = gr.Dropdown(list(COLOR_FIXES), value=defaults.color_fix, label="Color fix")
    c["smart_chopping"] = gr.Checkbox(defaults.smart_chopping, label="Smart chopping (overlap by local complexity)")
    with gr.Row(visible=defaults.smart_chopping) as overlap_row:
        c["min_overlap"] = gr.Slider(*MIN_OVERLAP_RANGE, value=defaults.min_overlap, step=0.01, label="Min overlap")
        c["max_overlap"] = gr.Slider(*MAX_OVERLAP_RANGE, value=defaults.max_overlap, step=0.01, label="Max overlap")
    c["attention_fusion"] = gr.Checkbox(defaults.attention_fusion, label="Attention fusion")
    c["fusion_method"] = gr.Radio(list(FUSION_METHODS), value=defaults.fusion_method, label="Fusion method",
                                  visible=defaults.attention_fusion)
    c["edge_enhancement"] = gr.Checkbox(defaults.edge_enhancement, label="Edge enhancement")
    c["edge_strength"] = gr.Slider(0, 1, value=defaults.edge_strength, step=0.05, label="Edge strength",
                                   visible=defaults.edge_enhancement)
    c["outscale"] = gr.Slider(*OUTSCALE_RANGE, value=defaults.outscale, step=0.5, label="Output scale (×)")
    with gr.Row():
        c["format"] = gr.Radio(list(FORMATS), value=defaults.format, label="Batch output format",
                               info="The single-image download is always lossless PNG.")
        c["quality"] = gr.Slider(50, 100, value=defaults.quality, step=1, label="WebP/JPEG quality",
                                 visible=defaults.format != "png")

    def show_with(trigger, target, when=bool):
        trigger.change(lambda v: gr.update(visible=when(v)), trigger, target, queue=False, api_visibility="private")

    show_with(c["smart_chopping"], overlap_row)
    show_with(c["attention_fusion"], c["fusion_method"])
    show_with(c["edge_enhancement"], c["edge_strength"])
    show_with(c["format"], c["quality"], lambda f: f != "png")
    invsr_controls = [c[k] for k in INVSR_ONLY]

    def for_backend(name: str) -> list:
        on = name == "invsr"
        return [gr.update(visible=not on)] + [gr.update(interactive=on)] * len(invsr_controls)

    c["backend"].change(for_backend, c["backend"], [hint, *invsr_controls], queue=False, api_visibility="private")
    return c


def build_ui(studio: Studio, concurrency: int) -> gr.Blocks:
    cfg = studio.cfg
    runnable = [n for n, av in backend_status(cfg).items() if av.ok and n in BACKENDS]
    defaults = Settings.defaults(cfg, studio.default_backend)
    run_options = dict(concurrency_id=MODEL_GROUP, concurrency_limit=concurrency)
    with gr.Blocks(title="Super-resolution studio", delete_cache=(RESULT_TTL_SECONDS, RESULT_TTL_SECONDS)) as demo:
        gr.Markdown("## Super-resolution studio · ×4 upscaling")
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                with gr.Accordion("Settings (both tabs)", open=True):
                    settings = settings_panel(defaults, runnable)
                with gr.Accordion("Models", open=True):
                    gr.Markdown(models_markdown(cfg, studio.default_backend))
            with gr.Column(scale=2):
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        with gr.Row():
                            image_in = ImageUpload(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                                   label="Input (drop, paste or click)", height=360,
                                                   elem_id="input-image")
                            slider = gr.ImageSlider(type="filepath", label="Bicubic ↔ result", height=360,
                                                    elem_id="result-slider", interactive=False)
                        run_one = gr.Button("Upscale", variant="primary")
                        with gr.Row():
                            info = gr.Textbox(label="Run info", interactive=False, elem_id="run-info", scale=2)
                            download = gr.File(label="Lossless PNG", interactive=False, scale=1, min_width=260)
                    with gr.Tab("Batch"):
                        files = gr.File(file_count="multiple", type="filepath",
                                        label="Images or a zip (or leave empty and name a folder)")
                        with gr.Row():
                            folder = gr.Textbox(label=f"…or a folder inside the batch root ({studio.batch_root})",
                                                placeholder="e.g. holiday", scale=3)
                            overwrite = gr.Checkbox(False, label="Redo finished files", scale=1)
                        run_batch = gr.Button("Upscale all", variant="primary")
                        summary = gr.Textbox(label="Summary", interactive=False)
                        table = gr.Dataframe(headers=TABLE_HEADERS, type="array", interactive=False,
                                             label="Per-file status")
                        archive = gr.File(label="Results (zip)", interactive=False)
                with gr.Row():
                    cancel = gr.Button("Cancel the running job", variant="stop")
                    cancel_note = gr.Markdown()

        run_one.click(studio.upscale, [image_in], [slider, download, info], inputs_kwargs=settings,
                      api_name="upscale", **run_options)
        run_batch.click(studio.batch, [files, folder, overwrite], [table, archive, summary], inputs_kwargs=settings,
                        api_name="batch", **run_options)
        # Outside the queue, so it is not stuck behind the job it is meant to stop.
        cancel.click(studio.cancel, None, cancel_note, queue=False, api_name="cancel")
    return demo


# ---- command line --------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Super-resolution studio (Gradio web UI and API).")
    p.add_argument("--server-name", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--server-port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also publish through a Gradio share link")
    p.add_argument("--backend", choices=["auto", *sorted({"invsr", *BACKENDS})], default=None,
                   help="default backend: invsr when its weights are available, else realesrgan")
    p.add_argument("--cfg_path", default=None, help="OmegaConf YAML (default configs/sample-sd-turbo.yaml)")
    p.add_argument("--sd_path", default=None, help="local SD-Turbo folder (diffusers layout)")
    p.add_argument("--started_ckpt_path", default=None, help="local noise_predictor_sd_turbo_v5.pth")
    p.add_argument("--batch-root", default="inputs", help="folders named in the Batch tab must be inside this")
    p.add_argument("--output-root", default="outputs", help="batch results from folders go under this")
    p.add_argument("--concurrency", type=int, default=1, help="model runs at the same time")
    p.add_argument("--max-queue", type=int, default=20, help="requests waiting at most; more are turned away")
    p.add_argument("--max-file-size", default="50mb", help="largest upload, e.g. 50mb, 1gb")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest input image in pixels (overrides limits.max_input_pixels)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.concurrency < 1 or args.max_queue < 1:
        print("error: --concurrency and --max-queue must be at least 1", file=sys.stderr)
        return 2
    try:
        cfg = with_overrides(load_config(args.cfg_path), {
            "backend": args.backend,
            "sd_pipe.params.pretrained_model_name_or_path": args.sd_path,
            "model_start.ckpt_path": args.started_ckpt_path,
            "limits.max_input_pixels": args.max_pixels,
        })
        default, notice = resolve_backend_name(cfg)
    except (BackendUnavailable, FileNotFoundError, KeyError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    batch_root, output_root = Path(args.batch_root).absolute(), Path(args.output_root).absolute()
    batch_root.mkdir(parents=True, exist_ok=True)
    studio = Studio(cfg, default, batch_root, output_root)
    print(f"[backend] {notice}; batch root {batch_root}; outputs {output_root}", file=sys.stderr)
    demo = build_ui(studio, args.concurrency)
    # Results are served from the system temp folder, which Gradio allows already: no allowed_paths.
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.max_queue).launch(
        server_name=args.server_name, server_port=args.server_port, share=args.share,
        max_file_size=args.max_file_size, show_error=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
