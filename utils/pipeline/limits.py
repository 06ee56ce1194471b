"""Size limits checked before any work: the native-scale result and what producing it costs."""
from __future__ import annotations

from utils.settings import MB, RunSettings
from utils.tiling.chopping import FEATHER, context_grid

# Measured by scripts/measure_memory.py on a 2-core CPU in float32 (docs/benchmarks.md, "Memory per
# image"; refitted 2026-12-07 after the colour fix moved to OpenCV). Every backend's output pixels cost
# the same work (float64 blending accumulators, the result, the default wavelet colour fix, PNG
# encoding); the per-backend fits give 66–82 bytes per pixel, so all take the largest. What a backend
# needs beyond that is its spec's ``memory`` (utils/settings.py).
OUTPUT_BYTES_PER_PIXEL = 82
# Bytes per output pixel that post-processing heavier than the default wavelet colour fix adds
# (measured with SPAN); lighter settings are not credited, so the guard errs on the safe side.
COLOR_FIX_EXTRA = {"ycbcr": 59, "histogram": 97, "hybrid": 128}
FUSION_EXTRA = 37
EDGES_EXTRA = 92
# Headroom over the fitted figures: identical runs peak up to ~25 % apart (the allocator's reuse of
# freed memory) and sizes between the measured ones lie above the straight line.
SAFETY = 1.35


class LimitError(ValueError):
    """The requested result would exceed a configured limit."""


def output_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    return max(1, round(h * outscale)), max(1, round(w * outscale))


def tile_output_pixels(h: int, w: int, scale: int, settings: RunSettings) -> int:
    """Output pixels of the tiles (patches) that one model call of ``settings.backend`` works on."""
    settings = settings.for_input(h, w)
    if settings.spec.context_margin is None:  # InvSR: square patches of the reflect-padded input
        return settings.tile_size ** 2 * scale * scale * settings.batch_size
    margin = settings.tile_margin
    if settings.smart_chopping:  # its tiles vary with the image: the largest it may use
        side = settings.tile_size + 2 * margin + FEATHER
        th, tw = min(side, h), min(side, w)
    else:
        grid = context_grid(h, w, settings.tile_size, margin)
        th, tw = grid.height, grid.width
    return th * tw * scale * scale * settings.batch_size


def postprocess_extra(settings: RunSettings) -> float:
    """Bytes per output pixel that ``settings``' post-processing needs beyond the default's."""
    extra = COLOR_FIX_EXTRA.get(settings.color_fix, 0)
    if settings.attention_fusion:
        extra += FUSION_EXTRA
    if settings.edge_enhancement > 0:
        extra += EDGES_EXTRA
    return extra


def working_memory_mb(h: int, w: int, scale: int, settings: RunSettings) -> float:
    """Peak memory (MB) one h×w input needs at the backend's native ×``scale``, models aside."""
    cost = settings.spec.memory
    pixels = h * w * scale * scale
    need = (cost.fixed + cost.per_tile_pixel * tile_output_pixels(h, w, scale, settings)
            + (OUTPUT_BYTES_PER_PIXEL + postprocess_extra(settings)) * pixels)
    return SAFETY * need / MB


def check_limits(h: int, w: int, scale: int, settings: RunSettings) -> tuple[int, int]:
    """The final (height, width) of an h×w input, or LimitError when the native ×``scale`` result or
    its working memory is over the configured limits."""
    native = h * w * scale * scale
    if native > settings.max_output_pixels:
        raise LimitError(
            f"the ×{scale} result would be {w * scale}×{h * scale} = {native:,} pixels, over the limit of "
            f"{settings.max_output_pixels:,} (limits.max_output_pixels); crop or downscale the input")
    memory = working_memory_mb(h, w, scale, settings)
    if memory > settings.max_memory_mb:
        raise LimitError(
            f"a {w}×{h} input needs about {memory:,.0f} MB at ×{scale}, over the limit of "
            f"{settings.max_memory_mb:,} MB (limits.max_memory_mb); crop or downscale the input")
    return output_size(h, w, settings.outscale)
