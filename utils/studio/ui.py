"""The studio's page: the image first (input, result, Upscale) with the settings beside it on a wide
screen and below it on a phone; presets; a model picker in plain words; what a run will cost next to
the controls that change it; one progress line with the time left; comparison with bicubic or the
previous run, a 100 % zoom and the session's runs; settings kept in the browser across reloads.

The API endpoints (/upscale, /batch, /cancel) are the service's functions with every setting as an
optional keyword; the page runs its own events around them, which keep a failed run's message in the
info line and the previous result on screen. Every model run goes through the queue under one
concurrency group, so the concurrency limit bounds the page and the API together.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import fields
from functools import partial, wraps

import gradio as gr

from datapipe.image_io import image_size
from utils.backends import BACKENDS, backend_status
from utils.config import COLOR_FIX_METHODS, FUSION_METHODS, OUTPUT_FORMATS
from utils.settings import BACKEND_SPECIFIC, STAGES, readers
from utils.studio.catalog import NAMES, label, models_markdown, name, unavailable_line
from utils.studio.presets import PRESETS
from utils.studio.service import RESULT_TTL_SECONDS, Studio
from utils.studio.settings import (MAX_OVERLAP_RANGE, MIN_OVERLAP_RANGE, OUTSCALES, OVERLAP_RANGE,
                                   TILE_SIZE_RANGE, Settings, scale_label, tiling_defaults)

MODEL_GROUP = "model"             # one concurrency group for every event that runs a model
TABLE_HEADERS = ["file", "status", "reason", "seconds", "NIQE"]
HISTORY_SIZE = 8                  # runs kept in a session's history
ZOOM_SIZE = 256                   # side of the 100 % crops, in result pixels
COMPARE_WITH = ("bicubic", "previous run")
# Settings are not secret; fixed keys let them survive a server restart as well as a reload.
STORAGE_KEY, STORAGE_SECRET = "sr-studio-settings", "sr-studio"
# Gradio sizes gallery columns by the number of images: one run would fill the width.
CSS = """
#history .grid-container { grid-template-columns: repeat(auto-fill, minmax(90px, 120px)) !important; }
"""
# What each control does, shown under it (the glossary); backend-specific ones say so when disabled.
INFO = {
    "tile_size": "smaller: less memory, more tiles",
    "overlap": "context read past each tile edge",
    "smart_chopping": "more overlap where the image is detailed, less where it is flat",
    "num_steps": "diffusion steps: each adds detail and time",
    "timesteps": "e.g. 200,100,50 (empty: the default list for the number of steps)",
    "seed": "the same seed gives the same result",
    "adaptive_scheduler": "more steps for complex images",
    "adaptive_guidance": "guidance scaled by image complexity (with cfg_scale > 1)",
    "denoise": "JPEG noise removal: -1 off, 3 strongest",
    "color_fix": "match the result's colours to the input (wavelet: keep detail, fix tint)",
    "attention_fusion": "blend in the bicubic upscale where the result has weak edges",
    "fusion_method": "weighted: a soft blend; max: per pixel, the result or the bicubic, whichever weighs more",
    "edge_enhancement": "edge-aware sharpening of the result",
    "niqe": "no-reference naturalness of the result and of bicubic, lower is better (≈ 0.1 s per MP)",
}
INVSR_INFO = {"overlap": "InvSR: patches overlap by half",
              "tile_size": "InvSR: left at 128, inputs from 512×512 up use 256, as its reference does"}


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


class SettingSlider(gr.Slider):
    """gr.Slider whose value reaches the one config validation as sent.

    Stock gr.Slider refuses an out-of-range number with "Value 7 is greater than maximum value 4",
    naming no setting, and cannot be left unset; here an API caller may send None (the backend's
    default) and a typed or sent value out of range is refused with the setting's name.
    """

    is_template = True  # reuse gr.Slider's front-end

    def preprocess(self, payload):
        return payload

    def postprocess(self, value):
        return None if value is None else super().postprocess(value)

    def api_info(self) -> dict:
        return {"anyOf": [{"type": "number"}, {"type": "null"}],
                "description": f"{self.minimum} to {self.maximum} on the page; null: the backend's default"}


def api_endpoint(fn):
    """``fn(..., **settings)`` with every setting a keyword parameter defaulting to None. Gradio takes an
    API parameter's default from its control's initial value, or else from the function's signature: so
    a client may leave out the settings whose controls start unset (unset: the backend's default)."""
    signature = inspect.signature(fn)
    fixed = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    keywords = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None) for f in fields(Settings)]

    @wraps(fn)
    def endpoint(*args, **kwargs):
        return fn(*args, **kwargs)

    endpoint.__signature__ = signature.replace(parameters=fixed + keywords)
    return endpoint


def backend_choices() -> list[tuple[str, str]]:
    return [(label(b), b) for b in NAMES]


def settings_panel(defaults: Settings) -> tuple[dict[str, gr.components.Component], gr.Markdown, gr.Markdown]:
    """The settings controls (API parameter name → control), built once, feeding every event, with the
    chosen model's note under the picker and the run's cost under the tiling controls. The controls
    whose default depends on the backend start unset: unset through the API means the chosen backend's
    default, and the page fills them in when it loads."""
    c: dict[str, gr.components.Component] = {}
    c["backend"] = gr.Dropdown(backend_choices(), value=defaults.backend, label="Model", allow_custom_value=True,
                               elem_id="backend")
    model_note = gr.Markdown(elem_id="model-note")
    with gr.Group():
        with gr.Row():
            c["tile_size"] = SettingSlider(*TILE_SIZE_RANGE, value=None, step=8, label="Tile size (px)",
                                           info=INFO["tile_size"], elem_id="tile-size")
            c["overlap"] = SettingSlider(*OVERLAP_RANGE, value=None, step=1, label="Overlap (px)",
                                         info=INFO["overlap"], elem_id="overlap")
        c["smart_chopping"] = gr.Checkbox(defaults.smart_chopping, label="Smart chopping",
                                          info=INFO["smart_chopping"])
        with gr.Row(visible=defaults.smart_chopping) as smart_row:
            c["min_overlap"] = SettingSlider(*MIN_OVERLAP_RANGE, value=defaults.min_overlap, step=0.01,
                                             label="Least overlap (fraction of a tile)")
            c["max_overlap"] = SettingSlider(*MAX_OVERLAP_RANGE, value=defaults.max_overlap, step=0.01,
                                             label="Most overlap (fraction of a tile)")
        estimate = gr.Markdown(elem_id="estimate", padding=True)
    with gr.Accordion("InvSR (diffusion)", open=defaults.backend == "invsr"):
        with gr.Row():
            c["num_steps"] = SettingSlider(1, 5, value=None, step=1, label="Steps", info=INFO["num_steps"],
                                           elem_id="num-steps")
            c["seed"] = gr.Number(None, precision=0, label="Seed", info=INFO["seed"])
        c["timesteps"] = gr.Textbox("", label="Custom timesteps", info=INFO["timesteps"])
        with gr.Row():
            c["adaptive_scheduler"] = gr.Checkbox(defaults.adaptive_scheduler, label="Adaptive scheduler",
                                                  info=INFO["adaptive_scheduler"])
            c["adaptive_guidance"] = gr.Checkbox(defaults.adaptive_guidance, label="Adaptive guidance",
                                                 info=INFO["adaptive_guidance"])
    c["denoise"] = SettingSlider(-1, 3, value=None, step=1, label="waifu2x denoise", info=INFO["denoise"])
    with gr.Accordion("Post-processing", open=False):
        c["color_fix"] = gr.Dropdown(list(COLOR_FIX_METHODS), value=defaults.color_fix, label="Colour fix",
                                     info=INFO["color_fix"])
        c["attention_fusion"] = gr.Checkbox(defaults.attention_fusion, label="Attention fusion",
                                            info=INFO["attention_fusion"])
        c["fusion_method"] = gr.Radio(list(FUSION_METHODS), value=defaults.fusion_method, label="Fusion method",
                                      visible=defaults.attention_fusion)
        c["edge_enhancement"] = gr.Checkbox(defaults.edge_enhancement, label="Edge enhancement",
                                            info=INFO["edge_enhancement"])
        c["edge_strength"] = SettingSlider(0, 1, value=defaults.edge_strength, step=0.05, label="Edge strength",
                                           visible=defaults.edge_enhancement)
    with gr.Row():
        c["outscale"] = gr.Dropdown([(f"×{s}", s) for s in OUTSCALES], value=defaults.outscale, label="Scale",
                                    allow_custom_value=True, min_width=90, elem_id="outscale")
        c["format"] = gr.Radio(list(OUTPUT_FORMATS), value=defaults.format, label="Format", min_width=200)
        c["quality"] = SettingSlider(50, 100, value=defaults.quality, step=1, label="WebP/JPEG quality",
                                     visible=defaults.format != "png", min_width=160)
    c["niqe"] = gr.Checkbox(defaults.niqe, label="Quality score (NIQE)", info=INFO["niqe"])

    def show_with(trigger, target, when=bool):
        trigger.change(lambda v: gr.update(visible=when(v)), trigger, target, queue=False, api_visibility="private")

    show_with(c["smart_chopping"], smart_row)
    show_with(c["attention_fusion"], c["fusion_method"])
    show_with(c["edge_enhancement"], c["edge_strength"])
    show_with(c["format"], c["quality"], lambda f: f != "png")
    return c, model_note, estimate


def applies_to() -> dict[str, list[str]]:
    """Setting -> the backends that read it (from their specs), for the page's controls the chosen
    backend changes: those some backends do not read, and the tile size (whose note differs for InvSR)."""
    controls = [f.name for f in fields(Settings)]
    return {key: readers(key) for key in controls if key in BACKEND_SPECIFIC or key == "tile_size"}


def history_entry(done) -> dict:
    """A finished run in the session history: its files, a short title and a caption with its settings."""
    title = f"{name(done.run.backend)} {scale_label(done.run.outscale).replace('x', '×')}"
    return {"result": done.result, "bicubic": done.before, "title": title,
            "caption": f"{title} · tile {done.run.tile_size} · {done.seconds:.1f} s · {time.strftime('%H:%M:%S')}"}


class Page:
    """The page's event handlers: the service's functions plus what only the page needs."""

    def __init__(self, studio: Studio, controls: dict[str, gr.components.Component]):
        self.studio = studio
        self.keys = list(controls)
        self.status = backend_status(studio.cfg)
        self.defaults = Settings.defaults(studio.cfg, studio.default_backend)

    def values(self, s: Settings) -> list:
        return [getattr(s, k) for k in self.keys]

    def settings(self, values: dict) -> dict:
        """The page's settings as the service takes them: those the backend does not read unset."""
        return vars(Settings(**values).applicable())

    # ---- settings ----

    def restore(self, saved):
        """The controls' values on page load: those saved in this browser, else the defaults."""
        saved = saved if isinstance(saved, dict) else {}
        restored = self.defaults.replace(**{k: v for k, v in saved.items() if k in self.keys})
        if restored.backend not in BACKENDS:
            restored = restored.replace(backend=self.defaults.backend)
        return self.values(restored)

    def backend_view(self, backend: str) -> list:
        """The model note and, per backend-dependent control, enabled or disabled with the reason."""
        if backend not in BACKENDS:
            return [f"⚠ unknown model '{backend}'"] + [gr.skip()] * len(applies_to())
        status = self.status[backend]
        card = BACKENDS[backend].card
        note = (f"✗ {unavailable_line(backend, status)}" if not status.ok
                else f"{card.use} Speed: {card.speed}." if card else label(backend))
        updates = []
        for key, names in applies_to().items():
            on = backend in names
            info = INFO[key] if on else ", ".join(map(name, names)) + " only"
            if backend == "invsr":
                info = INVSR_INFO.get(key, info)
            # A stage the backend refuses is unticked, so the run is not refused for a greyed-out box.
            untick = {"value": False} if not on and key in STAGES else {}
            updates.append(gr.update(interactive=on, info=info, **untick))
        return [note] + updates

    def picked_backend(self, backend: str) -> list:
        """A model picked by hand starts from its own tile size and overlap (and no preset note)."""
        if backend not in BACKENDS:
            return [gr.skip(), gr.skip(), ""]
        tiling = tiling_defaults(self.studio.cfg, backend)
        return [tiling["tile_size"], gr.skip() if tiling["overlap"] is None else tiling["overlap"], ""]

    def review(self, image, **values) -> tuple[str, dict]:
        """(what the run will cost, or why it cannot run; the settings to save in the browser)."""
        try:
            text = self.studio.estimate(image, self.settings(values))
        except gr.Error as exc:
            text = f"⚠ {exc.message}"
        return text, values

    def preset(self, index: int, **values) -> list:
        chosen, note = PRESETS[index].apply(self.studio.cfg, Settings(**values), self.status)
        return self.values(chosen) + [note]

    # ---- single image ----

    def run_single(self, image, compare_with, runs, request: gr.Request, progress=gr.Progress(), **values):
        """Upscale for the page: a refused or failed run leaves the previous result on screen and its
        message in the info line; a finished one joins the session history."""
        try:
            done = self.studio.run_single(image, request, progress, **self.settings(values))
        except gr.Error as exc:
            return gr.skip(), gr.skip(), f"⚠ {exc.message} (the previous result is kept)", gr.skip(), gr.skip(), \
                gr.skip()
        if done.cancelled:
            return gr.skip(), gr.skip(), done.info, gr.skip(), gr.skip(), gr.skip()
        runs = [history_entry(done), *runs][:HISTORY_SIZE]
        return self.comparison(runs, 0, compare_with), done.result, done.info, runs, 0, self.gallery(runs)

    def comparison(self, runs: list[dict], shown: int, compare_with: str):
        """The slider's value and label: run ``shown`` against bicubic or the run before it."""
        if not runs:
            return gr.skip()
        current = runs[shown]
        if compare_with == "previous run" and shown + 1 < len(runs):
            earlier = runs[shown + 1]
            return gr.update(value=self.studio.matched(earlier["result"], current["result"]),
                             label=f"Previous run ({earlier['title']}) ↔ this run ({current['title']})")
        title = "Bicubic ↔ result" if compare_with == "bicubic" else "Bicubic ↔ result (no run before this one)"
        return gr.update(value=(current["bicubic"], current["result"]), label=title)

    @staticmethod
    def gallery(runs: list[dict]) -> list:
        return [(r["result"], r["caption"]) for r in runs]

    def pick_run(self, runs, compare_with, evt: gr.SelectData):
        """A run chosen in the history: back in the slider, the download box and the info line."""
        entry = runs[evt.index]
        return self.comparison(runs, evt.index, compare_with), entry["result"], entry["caption"], evt.index

    def zoom(self, pair, centre):
        if not pair or not all(pair):
            return gr.skip()
        return self.studio.zoom(pair[0], pair[1], centre, ZOOM_SIZE)

    def zoom_at(self, pair, image, evt: gr.SelectData):
        """Clicking the input picks the region the 100 % view shows."""
        width, height = image_size(image)
        centre = (evt.index[0] / width, evt.index[1] / height)
        return centre, self.zoom(pair, centre)

    # ---- batch ----

    def run_batch(self, files, folder, overwrite, request: gr.Request, progress=gr.Progress(), **values):
        try:
            return self.studio.batch(files, folder, overwrite, request, progress, **self.settings(values))
        except gr.Error as exc:
            return gr.skip(), gr.skip(), f"⚠ {exc.message}"


def build_ui(studio: Studio, concurrency: int) -> gr.Blocks:
    cfg = studio.cfg
    defaults = Settings.defaults(cfg, studio.default_backend)
    run_options = dict(concurrency_id=MODEL_GROUP, concurrency_limit=concurrency)
    quick = dict(queue=False, api_visibility="private")
    with gr.Blocks(title="SR Studio", delete_cache=(RESULT_TTL_SECONDS, RESULT_TTL_SECONDS)) as demo:
        gr.Markdown("### SR Studio · upscale images ×2–×4, offline")
        saved = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
        runs, shown, centre = gr.State([]), gr.State(0), gr.State((0.5, 0.5))
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=340):
                with gr.Tabs():
                    with gr.Tab("Single image"):
                        # Upscale under the input, so a phone shows input and button before the result.
                        with gr.Row():
                            with gr.Column(min_width=300):
                                image_in = ImageUpload(type="filepath", image_mode=None, height=300,
                                                       sources=["upload", "clipboard"], elem_id="input-image",
                                                       label="Input (drop, paste or click; click it later to zoom "
                                                             "there)")
                                with gr.Row():
                                    run_one = gr.Button("Upscale", variant="primary", elem_id="upscale", scale=3)
                                    cancel_one = gr.Button("Cancel", variant="stop", visible=False, scale=1,
                                                           elem_id="cancel-one")
                            slider = gr.ImageSlider(type="filepath", label="Bicubic ↔ result", height=360,
                                                    elem_id="result-slider", interactive=False, min_width=300)
                        info = gr.Textbox(label="Run info", interactive=False, elem_id="run-info", lines=1)
                        with gr.Row():
                            compare_with = gr.Radio(list(COMPARE_WITH), value="bicubic", elem_id="compare-with",
                                                    label="Compare the result with")
                            download = gr.File(label="Download", interactive=False, min_width=220, elem_id="download")
                        with gr.Accordion("Zoom to 100 %", open=False, elem_id="zoom"):
                            zoomed = gr.ImageSlider(type="filepath", label=f"{ZOOM_SIZE}×{ZOOM_SIZE} px at 100 %",
                                                    interactive=False, elem_id="zoom-slider", height=ZOOM_SIZE + 2,
                                                    width=ZOOM_SIZE + 2)  # + its 1-px border
                        history = gr.Gallery(label="This session's runs (click one to show it again)", height=190,
                                             allow_preview=False, elem_id="history", object_fit="contain")
                    with gr.Tab("Batch"):
                        files = gr.File(file_count="multiple", type="filepath",
                                        label="Images or a zip (or leave empty and name a folder)")
                        with gr.Row():
                            folder = gr.Textbox(placeholder="e.g. holiday", scale=3,
                                                label=f"…or a folder inside the batch root ({studio.batch_root.name})")
                            overwrite = gr.Checkbox(False, label="Redo finished files", scale=1)
                        with gr.Row():
                            run_batch = gr.Button("Upscale all", variant="primary", scale=3)
                            cancel_batch = gr.Button("Cancel", variant="stop", visible=False, scale=1)
                        summary = gr.Textbox(label="Summary", interactive=False, elem_id="batch-summary")
                        table = gr.Dataframe(headers=TABLE_HEADERS, type="array", interactive=False,
                                             label="Per-file status")
                        archive = gr.File(label="Results (zip)", interactive=False)
                cancel_note = gr.Markdown()
            with gr.Column(scale=2, min_width=320):
                with gr.Row():
                    preset_buttons = [gr.Button(p.title, size="sm", min_width=80, elem_id=f"preset-{i}")
                                      for i, p in enumerate(PRESETS)]
                preset_note = gr.Markdown(elem_id="preset-note")
                settings, model_note, estimate = settings_panel(defaults)
                lines, details = models_markdown(backend_status(cfg))
                gr.Markdown("**Models on this machine**\n\n" + lines, elem_id="models")
                with gr.Accordion("Model cards: use, scales, licence, source, speed", open=False):
                    gr.Markdown(details)

        page = Page(studio, settings)
        controls = list(settings.values())
        # Which controls apply to the chosen model, and what that model is good for.
        backend_view = [model_note, *(settings[k] for k in applies_to())]
        settings["backend"].change(page.backend_view, settings["backend"], backend_view, **quick)
        settings["backend"].input(page.picked_backend, settings["backend"],
                                  [settings["tile_size"], settings["overlap"], preset_note], **quick)
        # Every change: what the run will cost (or why it cannot run), and the settings saved in the browser.
        gr.on([c.change for c in controls] + [image_in.change], page.review, [image_in], [estimate, saved],
              inputs_kwargs=settings, trigger_mode="always_last", **quick)
        # On load the saved backend may equal the default, which fires no change: apply its view anyway.
        demo.load(page.restore, saved, controls, **quick) \
            .then(page.backend_view, settings["backend"], backend_view, **quick)
        for i, button in enumerate(preset_buttons):
            button.click(partial(page.preset, i), None, [*controls, preset_note], inputs_kwargs=settings, **quick)

        # The page's runs: the button is disabled and Cancel shown while the job runs.
        def running(on: bool) -> list:
            return [gr.update(interactive=not on), gr.update(visible=on)]

        for button, cancel, fn, inputs, outputs, progress_on in (
                (run_one, cancel_one, page.run_single, [image_in, compare_with, runs],
                 [slider, download, info, runs, shown, history], info),
                (run_batch, cancel_batch, page.run_batch, [files, folder, overwrite], [table, archive, summary],
                 summary)):
            button.click(lambda: running(True), None, [button, cancel], **quick) \
                .then(fn, inputs, outputs, inputs_kwargs=settings, show_progress_on=progress_on,
                      api_visibility="private", **run_options) \
                .then(lambda: running(False), None, [button, cancel], **quick)
        compare_with.change(page.comparison, [runs, shown, compare_with], slider, **quick)
        history.select(page.pick_run, [runs, compare_with], [slider, download, info, shown], **quick)
        slider.change(page.zoom, [slider, centre], zoomed, **quick)
        image_in.select(page.zoom_at, [slider, image_in], [centre, zoomed], **quick)

        # The API: the service's functions, errors raised to the client. Not triggered by the page.
        gr.on([], api_endpoint(studio.upscale), [image_in], [slider, download, info], inputs_kwargs=settings,
              api_name="upscale", **run_options)
        gr.on([], api_endpoint(studio.batch), [files, folder, overwrite], [table, archive, summary],
              inputs_kwargs=settings, api_name="batch", **run_options)
        # Outside the queue, so it is not stuck behind the job it is meant to stop.
        gr.on([cancel_one.click, cancel_batch.click], studio.cancel, None, cancel_note, queue=False,
              api_name="cancel")
    return demo
