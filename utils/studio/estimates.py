"""What a run will cost before it starts ("≈ 9 tiles, ≈ 40 s on this machine").

Tile counts come from the grids the backends use (:mod:`utils.tiling`); seconds from the throughput
timed on this machine the first time each model ran here (:mod:`utils.studio.calibration`), until then
from the throughput measured on this project's machine (2 shared x86-64 cores, no GPU). Either is
rough (timings swing by 2-3× with the machine's load), so the time is shown as a range.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from utils.settings import RunSettings
from utils.studio.calibration import measured
from utils.tiling.chopping import FEATHER, PatchGrid, context_grid

# Measured on 2026-11-22. Seconds per megapixel of tile area (context margins included) through each
# tiled backend at each native scale, ncnn float32 on the 2 cores: the median of 3 calls on one 128²
# tile. The light models hardly notice the machine's load; Real-ESRGAN x4plus does (570 s/MP at
# load ≈ 5), so its value is the one docs/benchmarks.md measured at load ≈ 1.
SECONDS_PER_MEGAPIXEL = {
    ("realesrgan", 4): 190.0,
    ("span", 2): 9.6, ("span", 4): 10.5,
    ("realesrgan-anime", 4): 9.4,
    ("waifu2x", 2): 6.2, ("waifu2x", 4): 33.0,
    ("bicubic", 4): 0.6,
}
# InvSR per 128×128 input patch (512×512 out), float32 on the same CPU at load ≈ 4, timed with randomly
# initialised models of SD-Turbo's and the noise predictor's exact shapes (the cost does not depend on
# the weight values; no weights here): VAE encode 17.5 s + noise predictor 19.2 s + VAE decode 38.3 s
# once, the UNet 12.2 s per step.
INVSR_PATCH_SECONDS = 75.0
INVSR_STEP_SECONDS = 12.0
INVSR_REFERENCE_PATCH = 128
# An InvSR input bigger than one patch is padded to a multiple of this (InvSRModels.mod_lq: the VAE's
# ×8 over the ×4 scale, times the UNet's ×8 for SD-Turbo).
INVSR_PAD_MULTIPLE = 16
# Reading, colour fix, blending and writing on top of the model (≈ 5 % in docs/benchmarks.md).
PIPELINE_OVERHEAD = 1.05


# The time shown as a range around the estimate: the machine is shared and its load swings; wider
# while the model has not been timed here.
MEASURED_RANGE = (0.7, 1.5)
UNMEASURED_RANGE = (0.5, 2.5)


@dataclass(frozen=True)
class Estimate:
    """Tiles one image needs (a range with smart chopping, whose overlap follows the content) and the
    seconds they take."""

    tiles: tuple[int, int]
    tile_size: tuple[int, int]     # height, width in input pixels, context margins included
    seconds: float
    chosen_tile: int = 0           # the tile size the user chose (or the model's default), input pixels
    overlap: Optional[int] = None  # context pixels per side; None: patches overlap by half (InvSR)
    measured: bool = False         # the time comes from a timed run on this machine
    whole: bool = False            # one tile although the image is larger than the tile size

    def tiles_text(self) -> str:
        """"≈ 4 tiles (tile size 64 px, overlap 8 px)": the tile size as the user chose it."""
        low, high = self.tiles
        count = f"{low}" if low == high else f"{low}–{high}"
        noun = "tile" if high == 1 else "tiles"
        overlap = "patches overlapping by half" if self.overlap is None else f"overlap {self.overlap} px"
        # Tiles are at most the tile size plus the overlap: more overlap can mean fewer, larger tiles.
        whole = ": the whole image fits in one with its overlap" if self.whole else ""
        return f"≈ {count} {noun} (tile size {self.chosen_tile} px, {overlap}{whole})"

    def text(self) -> str:
        low, high = (self.seconds * f for f in (MEASURED_RANGE if self.measured else UNMEASURED_RANGE))
        note = "" if self.measured else " (not timed here yet)"
        return f"{self.tiles_text()}, {time_range(low, high)}{note}"


def time_range(low: float, high: float) -> str:
    """"3–6 s", "40 s – 1 min 30 s", "< 1 s"."""
    if high < 1:
        return "< 1 s"
    if high < 60:
        return f"{round(low)}–{round(high)} s" if round(low) < round(high) else f"≈ {round(high)} s"
    return f"{duration(low)} – {duration(high)}"


def duration(seconds: float) -> str:
    """0.4 -> "< 1 s", 12.3 -> "12 s", 95 -> "1 min 35 s", 7300 -> "2 h 1 min"."""
    if seconds < 1:
        return "< 1 s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes == 0:
        return f"{secs} s"
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def about(seconds: float) -> str:
    """"≈ 12 s", or "< 1 s" (which needs no ≈)."""
    text = duration(seconds)
    return text if text.startswith("<") else f"≈ {text}"


def estimate(h: int, w: int, settings: RunSettings) -> Estimate:
    """Tiles and seconds for an h×w input with ``settings`` (whose backend names the model)."""
    settings = settings.for_input(h, w)
    timed = None
    if settings.backend == "invsr":
        pch = settings.tile_size
        h, w = max(h, pch), max(w, pch)  # the input is reflect-padded to at least one patch
        if (h, w) != (pch, pch):
            h, w = (math.ceil(side / INVSR_PAD_MULTIPLE) * INVSR_PAD_MULTIPLE for side in (h, w))
        grid = PatchGrid.regular(h, w, pch, pch // 2)
        steps = len(settings.timesteps) * (2 if settings.cfg_scale > 1 else 1)  # guidance doubles the UNet
        seconds_per_pixel = (INVSR_PATCH_SECONDS + steps * INVSR_STEP_SECONDS) / INVSR_REFERENCE_PATCH ** 2
    else:
        margin = settings.tile_margin
        grid = context_grid(h, w, settings.tile_size, margin)
        pch = settings.tile_size + 2 * margin + FEATHER
        timed = measured(settings.backend, settings.native_scale())
        seconds_per_pixel = (timed or SECONDS_PER_MEGAPIXEL[settings.backend, settings.native_scale()]) / 1e6
    if settings.smart_chopping:
        # Smart chopping's grid follows the content: count it at the least and the most overlap.
        tiles = sorted(len(PatchGrid.regular(h, w, pch, max(1, round(pch * (1 - overlap)))))
                       for overlap in (settings.min_overlap, settings.max_overlap))
        size = (min(pch, h), min(pch, w))
    else:
        tiles, size = [len(grid)] * 2, (grid.height, grid.width)
    seconds = seconds_per_pixel * size[0] * size[1] * (tiles[0] + tiles[1]) / 2 * PIPELINE_OVERHEAD
    whole = tiles[1] == 1 and settings.tile_size < max(h, w)
    return Estimate((tiles[0], tiles[1]), size, seconds, settings.tile_size, settings.tile_margin, timed is not None,
                    whole)
