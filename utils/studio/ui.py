"""The studio's page: the image first (input, Upscale, its live progress line, the result) with the
settings beside it on a wide screen and below it on a phone; presets; a model picker in plain words;
what a run will cost next to the controls that change it; a result area that belongs to the current
input (a new input clears it; hidden while empty); comparison with bicubic or the previous run of the
same image, a 100 % zoom and the session's runs; settings and runs kept in the browser across reloads.

The API endpoints (/upscale, /batch, /cancel) are the service's functions with every setting as an
optional keyword; the page runs its own events around them, which keep a failed run's message in the
info line and the previous result on screen. Every model run goes through the queue under one
concurrency group, so the concurrency limit bounds the page and the API together.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import fields
from functools import partial, wraps
from typing import Sequence

import gradio as gr

from datapipe.image_io import image_size
from utils.backends import BACKENDS, backend_status
from utils.config import COLOR_FIX_METHODS, FUSION_METHODS, OUTPUT_FORMATS
from utils.settings import BACKEND_SPECIFIC, STAGES, readers
from utils.studio.catalog import NAMES, label, models_markdown, name, unavailable_line
from utils.studio.presets import PRESETS
from utils.studio import history
from utils.studio.progress import ProgressLine, ticking
from utils.studio.service import NIQE_MIN_SIDE, NIQE_NOTE, RESULT_TTL_SECONDS, Studio
from utils.studio.words import LABELS, UNITS, label_of
from utils.studio.settings import (MAX_OVERLAP_RANGE, MIN_OVERLAP_RANGE, OUTSCALES, OVERLAP_RANGE,
                                   TILE_SIZE_RANGE, Settings, backend_key, tiling_defaults)
from utils.backends.custom_model import SUFFIXES
from utils.studio.user_models import UserModel, find_model, is_user_model, list_models

log = logging.getLogger("sr-studio")

MODEL_GROUP = "model"             # one concurrency group for every event that runs a model
TABLE_HEADERS = ["file", "status", "reason", "seconds", "NIQE"]
# The single-image events' outputs, in order (Page.single fills in the ones an event does not change).
SINGLE_OUTPUTS = ("slider", "download", "info", "runs", "shown", "history", "progress", "compare_with",
                  "saved_runs", "result_area")
ZOOM_SIZE = 256                   # side of the 100 % crops, in result pixels
COMPARE_WITH = ("bicubic", "previous run")
# Settings are not secret; fixed keys let them survive a server restart as well as a reload.
STORAGE_KEY, RUNS_KEY, STORAGE_SECRET = "sr-studio-settings", "sr-studio-runs", "sr-studio"
# Gradio sizes gallery columns by the number of images: one run would fill the width.
# Captions wrap (they tell runs apart); the model picker's text stops before its arrow; wide tables scroll.
CSS = """
#history .grid-container { grid-template-columns: repeat(auto-fill, minmax(90px, 160px)) !important; }
#history .caption-label { white-space: normal !important; overflow: visible !important; }
#backend input { padding-right: 2.2em !important; text-overflow: ellipsis; }
#batch-table .table-wrap, #batch-table table { overflow-x: auto !important; }
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
    "niqe": f"{NIQE_NOTE}; scored for results from {NIQE_MIN_SIDE}×{NIQE_MIN_SIDE} px (≈ 0.1 s per MP)",
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


def backend_choices(user_models: Sequence[UserModel]) -> list[tuple[str, str]]:
    """The packaged models, then "Your models" (the models folder's files)."""
    return [(label(b), b) for b in NAMES if b != "custom"] + [(m.label, m.value) for m in user_models]


def user_models_markdown(user_models: Sequence[UserModel]) -> str:
    """The models folder's list; the folder is named by its option, never by its path on the server."""
    lines = "\n".join(f"- {m.line()}" for m in user_models) or "- none yet"
    return f"**Your models** (files in the models folder, --models-dir; reload the page after adding one)\n\n{lines}"


def settings_panel(defaults: Settings, user_models: Sequence[UserModel] = ()) -> tuple[
        dict[str, gr.components.Component], gr.Markdown, gr.Markdown]:
    """The settings controls (API parameter name → control), built once, feeding every event, with the
    chosen model's note under the picker and the run's cost under the tiling controls. The controls
    whose default depends on the backend start unset: unset through the API means the chosen backend's
    default, and the page fills them in when it loads."""
    c: dict[str, gr.components.Component] = {}
    c["backend"] = gr.Dropdown(backend_choices(user_models), value=defaults.backend, label=LABELS["backend"],
                               allow_custom_value=True, elem_id="backend")
    model_note = gr.Markdown(elem_id="model-note")
    with gr.Group():
        with gr.Row():
            c["tile_size"] = SettingSlider(*TILE_SIZE_RANGE, value=None, step=8, label=label_of("tile_size"),
                                           info=INFO["tile_size"], elem_id="tile-size")
            c["overlap"] = SettingSlider(*OVERLAP_RANGE, value=None, step=1, label=label_of("overlap"),
                                         info=INFO["overlap"], elem_id="overlap")
        c["smart_chopping"] = gr.Checkbox(defaults.smart_chopping, label=LABELS["smart_chopping"],
                                          info=INFO["smart_chopping"])
        with gr.Row(visible=defaults.smart_chopping) as smart_row:
            c["min_overlap"] = SettingSlider(*MIN_OVERLAP_RANGE, value=defaults.min_overlap, step=0.01,
                                             label=f"{LABELS['min_overlap']} (fraction of a tile)")
            c["max_overlap"] = SettingSlider(*MAX_OVERLAP_RANGE, value=defaults.max_overlap, step=0.01,
                                             label=f"{LABELS['max_overlap']} (fraction of a tile)")
        estimate = gr.Markdown(elem_id="estimate", padding=True)
    with gr.Accordion("InvSR (diffusion)", open=defaults.backend == "invsr"):
        with gr.Row():
            c["num_steps"] = SettingSlider(1, 5, value=None, step=1, label=LABELS["num_steps"], info=INFO["num_steps"],
                                           elem_id="num-steps")
            c["seed"] = gr.Number(None, precision=0, label=LABELS["seed"], info=INFO["seed"])
        c["timesteps"] = gr.Textbox("", label=LABELS["timesteps"], info=INFO["timesteps"])
        with gr.Row():
            c["adaptive_scheduler"] = gr.Checkbox(defaults.adaptive_scheduler, label=LABELS["adaptive_scheduler"],
                                                  info=INFO["adaptive_scheduler"])
            c["adaptive_guidance"] = gr.Checkbox(defaults.adaptive_guidance, label=LABELS["adaptive_guidance"],
                                                 info=INFO["adaptive_guidance"])
    c["denoise"] = SettingSlider(-1, 3, value=None, step=1, label=LABELS["denoise"], info=INFO["denoise"])
    with gr.Accordion("Post-processing", open=False):
        c["color_fix"] = gr.Dropdown(list(COLOR_FIX_METHODS), value=defaults.color_fix, label=LABELS["color_fix"],
                                     info=INFO["color_fix"])
        c["attention_fusion"] = gr.Checkbox(defaults.attention_fusion, label=LABELS["attention_fusion"],
                                            info=INFO["attention_fusion"])
        c["fusion_method"] = gr.Radio(list(FUSION_METHODS), value=defaults.fusion_method, label=LABELS["fusion_method"],
                                      visible=defaults.attention_fusion)
        c["edge_enhancement"] = gr.Checkbox(defaults.edge_enhancement, label=LABELS["edge_enhancement"],
                                            info=INFO["edge_enhancement"])
        c["edge_strength"] = SettingSlider(0, 1, value=defaults.edge_strength, step=0.05, label=LABELS["edge_strength"],
                                           visible=defaults.edge_enhancement)
    with gr.Row():
        c["outscale"] = gr.Dropdown([(f"×{s:g}", s) for s in OUTSCALES], value=defaults.outscale,
                                    label=LABELS["outscale"], info="or type a factor from 1 to 4, e.g. 2.5",
                                    allow_custom_value=True, min_width=90, elem_id="outscale")
        c["format"] = gr.Radio(list(OUTPUT_FORMATS), value=defaults.format, label=LABELS["format"], min_width=200)
        c["quality"] = SettingSlider(50, 100, value=defaults.quality, step=1, label=LABELS["quality"],
                                     visible=defaults.format != "png", min_width=160)
    c["niqe"] = gr.Checkbox(defaults.niqe, label=LABELS["niqe"], info=INFO["niqe"])

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


class Page:
    """The page's event handlers: the service's functions plus what only the page needs."""

    def __init__(self, studio: Studio, controls: dict[str, gr.components.Component]):
        self.studio = studio
        self.controls = controls
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
        listed = {m.value for m in list_models(self.studio.models_dir)}
        if restored.backend not in BACKENDS and restored.backend not in listed:
            restored = restored.replace(backend=self.defaults.backend)
        return self.values(restored)

    def user_models_view(self, backend=None) -> list:
        """The picker (its choices, and ``backend`` chosen when given) and the "Your models" list, read from
        the models folder now."""
        models = list_models(self.studio.models_dir)
        chosen = {} if backend is None else {"value": backend}
        return [gr.update(choices=backend_choices(models), **chosen), user_models_markdown(models)]

    def load_settings(self, saved) -> list:
        """On page load, in one update (so no control's change races another): :meth:`restore`'s values,
        the picker listing the models folder as it is now, and the "Your models" list."""
        values = self.restore(saved)
        index = self.keys.index("backend")
        values[index], models_list = self.user_models_view(values[index])
        return values + [models_list]

    def add_model(self, file) -> list:
        """An uploaded model file: stored and listed, or the reason in the list's place; the upload box
        is emptied either way."""
        try:
            self.studio.add_model(file)
        except gr.Error as exc:
            return [gr.skip(), f"⚠ {exc.message}", None]
        return [*self.user_models_view(), None]

    def user_model_note(self, value: str) -> str:
        entry = find_model(self.studio.models_dir, value)
        if entry is None:
            return f"✗ {value.removeprefix('custom:')} is not in the models folder"
        return f"Your model {entry.file}: {entry.model.summary()}." if entry.model else f"✗ {entry.error}"

    def backend_view(self, backend: str) -> list:
        """The model note and, per backend-dependent control, enabled or disabled with the reason."""
        if is_user_model(backend):
            note, backend = self.user_model_note(backend), "custom"
        elif backend not in BACKENDS:
            return [f"⚠ unknown model '{backend}'"] + [gr.skip()] * len(applies_to())
        else:
            status, card = self.status[backend], BACKENDS[backend].card
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
        if backend_key(backend) not in BACKENDS:
            return [gr.skip(), gr.skip(), ""]
        tiling = tiling_defaults(self.studio.cfg, backend_key(backend))
        if is_user_model(backend) and self.studio.cfg.custom.tile_margin is None:
            entry = find_model(self.studio.models_dir, backend)
            tiling["overlap"] = entry.model.context_margin if entry and entry.model else None
        return [tiling["tile_size"], gr.skip() if tiling["overlap"] is None else tiling["overlap"], ""]

    def review(self, image, refused, tab: str = "single", **values) -> tuple[str, dict]:
        """(what the run will cost, or why it cannot run; the settings to save in the browser). On the
        Batch tab the cost is per image, for an image of the size the estimates assume."""
        standing = self.standing(refused, values)
        if standing:
            return "⚠ " + "; ".join(standing), values
        batch = tab == "batch"
        try:
            text = self.studio.estimate(None if batch else image, self.settings(values))
        except gr.Error as exc:
            return f"⚠ {exc.message}", values
        return (f"{text}, per image of that size" if batch else text), values

    def typed(self, key: str, value, refused: dict) -> dict:
        """A value typed into a number box: the browser clamps one out of range when the box loses focus,
        so it is noted here, (message, the clamped value), and refused in the control's words while the
        control shows the clamped value."""
        control = self.controls[key]
        refused = {k: v for k, v in (refused or {}).items() if k != key}
        if value is not None and not control.minimum <= value <= control.maximum:
            unit = f" {UNITS[key]}" if key in UNITS else ""
            clamped = control.minimum if value < control.minimum else control.maximum
            refused[key] = (f"{LABELS[key]} must be from {control.minimum:g} to {control.maximum:g}{unit} "
                            f"(got {value:g})", clamped)
        return refused

    @staticmethod
    def standing(refused: dict, values: dict) -> list[str]:
        """The refusals that still stand: a clamped value's while its control shows the clamped value
        (events race: another value may be in place before the refusal is withdrawn), others until
        withdrawn."""
        return [message for key, (message, clamped) in (refused or {}).items()
                if clamped is None or values.get(key) == clamped]

    def scale_for(self, side: str, value, image, refused: dict):
        """(the Scale for a target width or height of the input, the refusals): the factor that gives
        ``value`` pixels, refused when it is not from ×1 to ×4."""
        refused = {k: v for k, v in (refused or {}).items() if k != "outscale"}
        if not value or not image:  # the box emptied (0 on the page): the Scale stays as it is
            return gr.skip(), refused
        width, height = image_size(image)
        have = width if side == "width" else height
        factor = value / have
        if not 1 <= factor <= 4:
            refused["outscale"] = (f"a target {side} of {value:g} px is ×{factor:.2f} of this image's {have} px; "
                                   f"{LABELS['outscale']} must be from ×1 to ×4", None)
            return gr.skip(), refused
        return factor, refused

    def preset(self, index: int, **values) -> list:
        chosen, note = PRESETS[index].apply(self.studio.cfg, Settings(**values), self.status)
        return self.values(chosen) + [note]

    # ---- single image ----

    @staticmethod
    def single(**given) -> tuple:
        """The single-image event's outputs (SINGLE_OUTPUTS) from those ``given``, the rest unchanged."""
        return tuple(given.get(k, gr.skip()) for k in SINGLE_OUTPUTS)

    def run_single(self, image, compare_with, runs, refused, request: gr.Request, **values):
        """Upscale for the page, its progress line redrawn every second: a refused or failed run leaves
        the result on screen and its message in the info line; a finished one joins the history and
        says 100 % together with its result."""
        standing = self.standing(refused, values)
        if standing:
            yield self.single(info="⚠ " + "; ".join(standing), progress="")
            return
        line = ProgressLine()
        work = partial(self.studio.run_single, image, request, line, **self.settings(values))
        try:
            done = yield from ticking(work, line, lambda text: self.single(progress=text))
        except gr.Error as exc:
            yield self.single(info=f"⚠ {exc.message} (the previous result is kept)", progress="")
            return
        except Exception as exc:  # the line must not outlive its run, whatever stopped it
            log.exception("a single-image run failed")
            yield self.single(info=f"⚠ {exc} (the previous result is kept)", progress="")
            return
        if done.cancelled:
            yield self.single(info=done.info, progress="")
            return
        runs = history.added(runs, history.entry(done, image))
        yield self.single(info=done.info, progress=line.done_text(), **self.showing(runs, 0, compare_with))

    def showing(self, runs: list[dict], shown: int, compare_with: str) -> dict:
        """The result area, the history and the comparison choice for run ``shown`` of ``runs``."""
        compare = self.compare_choice(runs, shown)
        if compare_with == "previous run" and not compare["interactive"]:
            compare_with = "bicubic"
        return dict(slider=self.comparison(runs, shown, compare_with), download=runs[shown]["result"], runs=runs,
                    shown=shown, history=gr.update(value=history.gallery(runs), visible=True), saved_runs=runs,
                    compare_with=compare, result_area=gr.update(visible=True))

    @staticmethod
    def compare_choice(runs: list[dict], shown) -> dict:
        """"Compare with the previous run" is offered only when an earlier run had the same input bytes."""
        if history.earlier_of_same_input(runs, shown) is not None:
            return gr.update(interactive=True, info="previous run: the last run of this same image")
        return gr.update(interactive=False, value="bicubic",
                         info="previous run: only for an image run twice; this one has no earlier run")

    def comparison(self, runs: list[dict], shown, compare_with: str):
        """The slider's value and label: run ``shown`` against bicubic or the last run of the same input."""
        if shown is None or not runs:
            return gr.skip()
        current, earlier = runs[shown], history.earlier_of_same_input(runs, shown)
        if compare_with == "previous run" and earlier is not None:
            return gr.update(value=self.studio.matched(earlier["result"], current["result"]),
                             label=f"Previous run ({earlier['title']}) ↔ this run ({current['title']})")
        return gr.update(value=(current["bicubic"], current["result"]), label="Bicubic ↔ result")

    def new_input(self, image):
        """A new or cleared input: the result area, info and zoom belonged to the previous image."""
        return self.single(slider=gr.update(value=None), download=None, info="", shown=None, progress="",
                           compare_with=self.compare_choice([], None), result_area=gr.update(visible=False)) \
            + (gr.update(value=None),)

    def pick_run(self, runs, compare_with, evt: gr.SelectData):
        """A run chosen in the history: its input back in the input box, its result in the result area."""
        entry = runs[evt.index]
        return (*self.single(info=entry["info"], progress="", **self.showing(runs, evt.index, compare_with)),
                entry["input"])

    def restore_runs(self, saved):
        """The history kept in this browser, minus runs whose files the server no longer has."""
        runs = history.still_there(saved)
        return runs, gr.update(value=history.gallery(runs), visible=bool(runs))

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

    def run_batch(self, files, folder, overwrite, refused, request: gr.Request, **values):
        """(table, zip, summary, progress line): the batch with its line redrawn every second."""
        standing = self.standing(refused, values)
        if standing:
            yield gr.skip(), gr.skip(), "⚠ " + "; ".join(standing), ""
            return
        line = ProgressLine()
        work = partial(self.studio.run_batch, files, folder, overwrite, request, line, **self.settings(values))
        try:
            table, archive, summary = yield from ticking(work, line, lambda text: (gr.skip(),) * 3 + (text,))
        except gr.Error as exc:
            yield gr.skip(), gr.skip(), f"⚠ {exc.message}", ""
            return
        except Exception as exc:  # as for a single image: the line ends with its run
            log.exception("a batch failed")
            yield gr.skip(), gr.skip(), f"⚠ {exc}", ""
            return
        yield table, archive, summary, line.done_text("finished")


def build_ui(studio: Studio, concurrency: int) -> gr.Blocks:
    cfg = studio.cfg
    defaults = Settings.defaults(cfg, studio.default_backend)
    run_options = dict(concurrency_id=MODEL_GROUP, concurrency_limit=concurrency)
    quick = dict(queue=False, api_visibility="private")
    with gr.Blocks(title="SR Studio", delete_cache=(RESULT_TTL_SECONDS, RESULT_TTL_SECONDS)) as demo:
        gr.Markdown("### SR Studio · upscale images ×1–×4, offline")
        saved = gr.BrowserState(None, storage_key=STORAGE_KEY, secret=STORAGE_SECRET)
        saved_runs = gr.BrowserState([], storage_key=RUNS_KEY, secret=STORAGE_SECRET)
        runs, shown, centre, refused = gr.State([]), gr.State(None), gr.State((0.5, 0.5)), gr.State({})
        tab = gr.State("single")  # the cost line describes the uploaded image, or on Batch one image
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=340):
                with gr.Tabs():
                    with gr.Tab("Single image") as single_tab:
                        # Upscale, progress and info under the input, so a phone shows them before the result.
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
                                progress_one = gr.Markdown(elem_id="progress")
                                info = gr.Textbox(label="Run info", interactive=False, elem_id="run-info", lines=1)
                            # Hidden until there is a result of this input, so a phone reaches the settings.
                            with gr.Column(min_width=300, visible=False, elem_id="result-area") as result_area:
                                slider = gr.ImageSlider(type="filepath", label="Bicubic ↔ result", height=360,
                                                        elem_id="result-slider", interactive=False)
                                with gr.Row():
                                    compare_with = gr.Radio(list(COMPARE_WITH), value="bicubic",
                                                            elem_id="compare-with", label="Compare the result with",
                                                            interactive=False)
                                    download = gr.File(label="Download", interactive=False, min_width=220,
                                                       elem_id="download")
                                with gr.Accordion("Zoom to 100 %", open=False, elem_id="zoom"):
                                    zoomed = gr.ImageSlider(type="filepath", elem_id="zoom-slider",
                                                            label=f"{ZOOM_SIZE}×{ZOOM_SIZE} px at 100 %: left of the "
                                                                  "handle what the result is compared with, right "
                                                                  "the result", interactive=False,
                                                            height=ZOOM_SIZE + 2, width=ZOOM_SIZE + 2)  # + border
                        history_box = gr.Gallery(label="This session's runs (click one to show it again)", height=210,
                                                 allow_preview=False, elem_id="history", object_fit="contain",
                                                 visible=False)
                    with gr.Tab("Batch") as batch_tab:
                        files = gr.File(file_count="multiple", type="filepath",
                                        label="Images or a zip (or leave empty and name a folder)")
                        with gr.Row():
                            folder = gr.Textbox(placeholder="e.g. holiday", scale=3, elem_id="batch-folder",
                                                label=f"…or a folder inside the batch root ({studio.batch_root.name})")
                            overwrite = gr.Checkbox(False, label="Redo finished files", scale=1)
                        with gr.Row():
                            run_batch = gr.Button("Upscale all", variant="primary", scale=3, elem_id="upscale-all")
                            cancel_batch = gr.Button("Cancel", variant="stop", visible=False, scale=1)
                        progress_batch = gr.Markdown(elem_id="batch-progress")
                        summary = gr.Textbox(label="Summary", interactive=False, elem_id="batch-summary")
                        table = gr.Dataframe(headers=TABLE_HEADERS, type="array", interactive=False,
                                             label="Per-file status", elem_id="batch-table")
                        archive = gr.File(label="Results (zip)", interactive=False)
            with gr.Column(scale=2, min_width=320):
                with gr.Row():
                    preset_buttons = [gr.Button(p.title, size="sm", min_width=80, elem_id=f"preset-{i}")
                                      for i, p in enumerate(PRESETS)]
                preset_note = gr.Markdown(elem_id="preset-note")
                user_models = list_models(studio.models_dir)
                settings, model_note, estimate = settings_panel(defaults, user_models)
                with gr.Row():
                    targets = {side: gr.Number(None, precision=0, label=f"…or a target {side} (px)",
                                               info="sets the Scale for this input (empty or 0: unused)",
                                               elem_id=f"target-{side}")
                               for side in ("width", "height")}
                lines, details = models_markdown(backend_status(cfg))
                gr.Markdown("**Models on this machine**\n\n" + lines, elem_id="models")
                user_list = gr.Markdown(user_models_markdown(user_models), elem_id="user-models")
                model_upload = gr.File(file_types=list(SUFFIXES), type="filepath", visible=studio.allow_model_upload,
                                       label="Add a model file (read as tensors only)", elem_id="model-upload")
                with gr.Accordion("Model cards: use, scales, licence, source, speed", open=False):
                    gr.Markdown(details)

        page = Page(studio, settings)
        controls = list(settings.values())
        single_outputs = dict(slider=slider, download=download, info=info, runs=runs, shown=shown,
                              history=history_box, progress=progress_one, compare_with=compare_with,
                              saved_runs=saved_runs, result_area=result_area)
        single_outputs = [single_outputs[k] for k in SINGLE_OUTPUTS]
        # Which controls apply to the chosen model, and what that model is good for.
        backend_view = [model_note, *(settings[k] for k in applies_to())]
        settings["backend"].change(page.backend_view, settings["backend"], backend_view, **quick)
        settings["backend"].input(page.picked_backend, settings["backend"],
                                  [settings["tile_size"], settings["overlap"], preset_note], **quick)
        # A number typed out of range is refused, not clamped behind the user's back.
        for key, control in settings.items():
            if isinstance(control, SettingSlider):
                control.input(partial(page.typed, key), [control, refused], refused, **quick)
        for side, target in targets.items():
            target.input(partial(page.scale_for, side), [target, image_in, refused], [settings["outscale"], refused],
                         **quick)
        # A preset's note describes its settings until one of them is changed by hand.
        gr.on([c.input for c in controls], lambda: "", None, preset_note, **quick)
        # Every change: what the run will cost (or why it cannot run), and the settings saved in the browser.
        single_tab.select(lambda: "single", None, tab, **quick)
        batch_tab.select(lambda: "batch", None, tab, **quick)
        gr.on([c.change for c in controls] + [image_in.change, refused.change, tab.change], page.review,
              [image_in, refused, tab],
              [estimate, saved], inputs_kwargs=settings, trigger_mode="always_last", **quick)
        # On load the saved backend may equal the default, which fires no change: apply its view anyway.
        # A file dropped into the models folder is listed on the next page load.
        demo.load(page.load_settings, saved, [*controls, user_list], **quick) \
            .then(page.backend_view, settings["backend"], backend_view, **quick)
        demo.load(page.restore_runs, saved_runs, [runs, history_box], **quick)
        for i, button in enumerate(preset_buttons):
            button.click(partial(page.preset, i), None, [*controls, preset_note], inputs_kwargs=settings, **quick)

        # The page's runs: the button is disabled and Cancel shown while the job runs; the job's own line
        # shows its progress (Gradio's overlay would hide the result it replaces).
        def running(on: bool) -> list:
            return [gr.update(interactive=not on), gr.update(visible=on)]

        for button, cancel, line, fn, inputs, outputs in (
                (run_one, cancel_one, progress_one, page.run_single, [image_in, compare_with, runs, refused],
                 single_outputs),
                (run_batch, cancel_batch, progress_batch, page.run_batch, [files, folder, overwrite, refused],
                 [table, archive, summary, progress_batch])):
            # A new run starts with an empty line: the last run's "100 %" is not this one's.
            button.click(lambda: [*running(True), ""], None, [button, cancel, line], **quick) \
                .then(fn, inputs, outputs, inputs_kwargs=settings, show_progress="hidden",
                      api_visibility="private", **run_options) \
                .then(lambda: running(False), None, [button, cancel], **quick)
        image_in.input(page.new_input, image_in, [*single_outputs, zoomed], **quick)
        compare_with.change(page.comparison, [runs, shown, compare_with], slider, **quick)
        history_box.select(page.pick_run, [runs, compare_with], [*single_outputs, image_in], **quick)
        slider.change(page.zoom, [slider, centre], zoomed, **quick)
        image_in.select(page.zoom_at, [slider, image_in], [centre, zoomed], **quick)

        # The API: the service's functions, errors raised to the client. Not triggered by the page.
        gr.on([], api_endpoint(studio.upscale), [image_in], [slider, download, info], inputs_kwargs=settings,
              api_name="upscale", **run_options)
        gr.on([], api_endpoint(studio.batch), [files, folder, overwrite], [table, archive, summary],
              inputs_kwargs=settings, api_name="batch", **run_options)
        listing = gr.JSON(visible=False)
        gr.on([], studio.models, None, listing, api_name="models", queue=False)
        gr.on([], studio.add_model, model_upload, listing, api_name="add_model", concurrency_id=MODEL_GROUP)
        model_upload.upload(page.add_model, model_upload, [settings["backend"], user_list, model_upload],
                            api_visibility="private", concurrency_id=MODEL_GROUP)
        # Outside the queue, so it is not stuck behind the job it is meant to stop; the job's own line
        # says so until the job ends and redraws it.
        cancel_one.click(studio.cancel, None, progress_one, queue=False, api_name="cancel")
        cancel_batch.click(studio.cancel, None, progress_batch, queue=False, api_visibility="private")
    return demo
