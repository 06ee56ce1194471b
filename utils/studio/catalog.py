"""What the studio tells people about the backends: a human name and purpose for the model picker, one
line on why a backend cannot run here (the same line on the page and through the API), and the
compact Models panel with the model cards behind an accordion."""
from __future__ import annotations

from dataclasses import dataclass

from utils.backends import BACKENDS, Availability
from utils.runtimes.policy import RuntimeRefused, choose
from utils.settings import SPECS

# Picker order: the offline models first, most general first; every registered backend has an entry.
NAMES = {
    "realesrgan": ("Real-ESRGAN", "photos, crisp, invents texture"),
    "span": ("SPAN", "faithful, fast"),
    "realesrgan-anime": ("Real-ESRGAN anime", "drawings and anime, clean lines, fast"),
    "waifu2x": ("waifu2x", "photos with JPEG noise, with denoise"),
    "invsr": ("InvSR", "diffusion, most detail, needs SD-Turbo weights"),
    "bicubic": ("Bicubic", "plain interpolation, the baseline"),
    "custom": ("Your model", "a model file of yours, from the models folder"),
}
# How to make a backend available when its files are a download away; the README section has details.
HOW_TO_ENABLE = {
    "invsr": "its weights (SD-Turbo, 2.6 GB, and the noise predictor) are not downloaded: run "
             "`python scripts/download_weights.py` once with internet (README, section Weights)",
    "custom": "put model files (.pth, .pt, .ckpt, .safetensors) in the models folder (--models-dir); they are "
              "listed under “Your models” (README, section Your own models)",
}


def name(backend: str) -> str:
    return NAMES[backend][0]


def label(backend: str) -> str:
    """"SPAN — faithful, fast": what the model picker shows."""
    human, purpose = NAMES[backend]
    return f"{human} — {purpose}"


def unavailable_line(backend: str, status: Availability) -> str:
    """One line saying why ``backend`` cannot run here and what to do about it."""
    return f"{name(backend)} is not available here: {HOW_TO_ENABLE.get(backend, status.reason)}"


@dataclass(frozen=True)
class ModelEntry:
    backend: str
    status: Availability

    def line(self) -> str:
        mark = "✓" if self.status.ok else "✗"
        return f"{mark} **{label(self.backend)}**" + (f" — {runs_on(self.backend)}" if self.status.ok else
                                                      f" — {unavailable_line(self.backend, self.status)}")

    def details(self) -> str:
        card = BACKENDS[self.backend].card
        text = card.text() if card is not None else name(self.backend)
        return text + ("" if self.status.ok else f"\n\n  Why not here: {self.status.reason}")


def runs_on(backend: str) -> str:
    """"runs on openvino bfloat16 here": the runtime and precision ``auto`` picks on this machine."""
    try:
        return f"runs on {choose(backend, SPECS[backend].runtimes).describe()} here"
    except RuntimeRefused as exc:
        return str(exc)


def models_markdown(status: dict[str, Availability]) -> tuple[str, str]:
    """(one line per backend, the model cards and full reasons) for the Models panel."""
    # Users' own files are listed on their own ("Your models"), each with its architecture and scale.
    entries = [ModelEntry(b, status[b]) for b in NAMES if b != "custom"]
    return ("\n".join(f"- {e.line()}" for e in entries),
            "\n".join(f"- **{name(e.backend)}**: {e.details()}" for e in entries))
