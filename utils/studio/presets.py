"""One-click starting points: a backend and the settings that suit it. A preset takes the first of
its backends that can run here, with that backend's own tile size and overlap; what it does not name
(output scale, format) stays as the user set it, and everything can be tweaked afterwards."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from omegaconf import DictConfig

from utils.backends import Availability
from utils.studio.catalog import name
from utils.studio.settings import Settings, tiling_defaults

# Every preset starts from here, so the result does not depend on what was ticked before.
PLAIN = dict(smart_chopping=False, attention_fusion=False, edge_enhancement=False, adaptive_scheduler=False,
             adaptive_guidance=False, color_fix="none")
SHARPENED = dict(PLAIN, color_fix="wavelet", edge_enhancement=True, edge_strength=0.3)


@dataclass(frozen=True)
class Preset:
    title: str
    purpose: str
    # (backend, its settings) in order of preference; the last one must always be available.
    choices: tuple[tuple[str, Mapping[str, Any]], ...]

    def apply(self, cfg: DictConfig, current: Settings, status: Mapping[str, Availability]) -> tuple[Settings, str]:
        """(``current`` with the preset applied, a note saying what it chose)."""
        backend, settings = next((b, s) for b, s in self.choices if status[b].ok)
        chosen = current.replace(backend=backend, **tiling_defaults(cfg, backend), **settings)
        note = f"**{self.title}**: {name(backend)}, {self.purpose}."
        if backend != self.choices[0][0]:
            note += f" ({name(self.choices[0][0])} cannot run here.)"
        return chosen, note


PRESETS = (
    Preset("Fast", "nothing else to compute", (("span", PLAIN), ("bicubic", PLAIN))),
    Preset("Faithful", "colours kept, bicubic where the model finds no edges to add",
           (("span", dict(PLAIN, color_fix="wavelet", attention_fusion=True, fusion_method="weighted")),
            ("bicubic", dict(PLAIN, color_fix="wavelet")))),
    Preset("Best detail", "the most detail it can add",
           (("invsr", dict(PLAIN, color_fix="wavelet", num_steps=1, timesteps="")),
            ("realesrgan", SHARPENED), ("bicubic", SHARPENED))),
)
