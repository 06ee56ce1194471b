"""The studio speaks in the words its page shows: each setting's control label (the page builds its
labels from the same table, so messages and labels cannot drift apart), and messages from the config
validation and the batch records translated from config keys and flag names into those labels. The
CLI keeps its own wording with flag names; this translation is the studio's alone."""
from __future__ import annotations

import dataclasses
import re

from utils.config import names_list
from utils.settings import SPECS, RunSettings, config_key
from utils.studio.catalog import NAMES

# Setting (the API's parameter name, the CLI's flag name) -> the control's label on the page.
LABELS = {
    "backend": "Model", "tile_size": "Tile size", "overlap": "Overlap", "smart_chopping": "Smart chopping",
    "min_overlap": "Least overlap", "max_overlap": "Most overlap", "num_steps": "Steps",
    "timesteps": "Custom timesteps", "seed": "Seed", "adaptive_scheduler": "Adaptive scheduler",
    "adaptive_guidance": "Adaptive guidance", "denoise": "waifu2x denoise", "color_fix": "Colour fix",
    "attention_fusion": "Attention fusion", "fusion_method": "Fusion method", "edge_enhancement": "Edge enhancement",
    "edge_strength": "Edge strength", "outscale": "Scale", "format": "Format", "quality": "WebP/JPEG quality",
    "niqe": "Quality score (NIQE)", "sd_path": "SD-Turbo folder", "started_ckpt_path": "noise predictor file",
    "cfg_scale": "guidance scale",
}
UNITS = {"tile_size": "px", "overlap": "px"}
# RunSettings field -> its setting, for the fields the resume records name (tile_margin is the overlap).
_FIELD_SETTING = {f.name: f.metadata["flag"] for f in dataclasses.fields(RunSettings)}
# Config phrasing -> the page's: "null" is what the page shows as the model's own default.
_PHRASES = ((re.compile(r"must be null \(the model's default\) or an integer ≥ (\d+)( and a multiple of \d+)?"),
             r"must be a whole number of at least \1 px\2"),)
_CHANGED = re.compile(r"(settings|model) changed \(([^)]*)\)")


def label_of(setting: str) -> str:
    """The control's label with its unit, as the page shows it: "Tile size (px)"."""
    unit = UNITS.get(setting)
    return f"{LABELS[setting]} ({unit})" if unit else LABELS[setting]


def _words(backend: str) -> dict[str, str]:
    """Config key or flag name -> the control's label, for a message about a run of ``backend``."""
    words = {backend_id: human for backend_id, (human, _) in NAMES.items()}
    for setting, text in LABELS.items():
        if setting == "backend":  # "unknown backend 'x'" reads well as it is
            continue
        words[setting] = text
        key = config_key(setting, backend) if backend in SPECS else None
        if key:
            words[key] = text
    words.update({f"output.{k}": LABELS[k] for k in ("format", "quality")})
    return words


def in_words(message: str, backend: str) -> str:
    """A validation message about a run of ``backend`` with the page's labels for config keys and flag
    names: "span.tile_size must be null … ≥ 16 (got 10)" -> "Tile size must be a whole number of at
    least 16 px (got 10)"."""
    for pattern, replacement in _PHRASES:
        message = pattern.sub(replacement, message)
    words = _words(backend)
    # Longest first, and never inside a longer name, so "span.tile_size" is one word, not "span." + label.
    keys = sorted(words, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, keys)) + r")(?![\w.])")
    return pattern.sub(lambda m: words[m.group(1)], message)


def reason_in_words(reason: str) -> str:
    """A batch record's reason in plain words: "redone: settings changed (color_fix, tile_margin)" ->
    "redone: colour fix and overlap changed"; a model change names no internal keys."""
    def plain(match: re.Match) -> str:
        if match.group(1) == "model":
            return "the model changed"
        names = [LABELS.get(_FIELD_SETTING.get(k, k), k.replace("_", " ")).lower() for k in
                 match.group(2).split(", ") if k]
        return f"{names_list(sorted(set(names), key=names.index))} changed"
    return _CHANGED.sub(plain, reason)
