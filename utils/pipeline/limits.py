"""Size limits checked before any work: the native-scale result and what producing it costs."""
from __future__ import annotations

from utils.settings import RunSettings

# Bytes per native-scale output pixel while one image is produced: the float64 blending accumulator
# (3 colour channels + 1 weight = 32 B), the float32 result (12 B) and one float32 post-processing
# copy such as the colour-fix reference (12 B).
BYTES_PER_OUTPUT_PIXEL = 56


class LimitError(ValueError):
    """The requested result would exceed a configured limit."""


def output_size(h: int, w: int, outscale: float) -> tuple[int, int]:
    return max(1, round(h * outscale)), max(1, round(w * outscale))


def working_memory_mb(h: int, w: int, scale: int) -> float:
    """Memory one h×w input needs at the backend's native ×``scale`` (result and blending buffers)."""
    return h * w * scale * scale * BYTES_PER_OUTPUT_PIXEL / 2 ** 20


def check_limits(h: int, w: int, scale: int, settings: RunSettings) -> tuple[int, int]:
    """The final (height, width) of an h×w input, or LimitError when the native ×``scale`` result or
    its working memory is over the configured limits."""
    native = h * w * scale * scale
    if native > settings.max_output_pixels:
        raise LimitError(
            f"the ×{scale} result would be {w * scale}×{h * scale} = {native:,} pixels, over the limit of "
            f"{settings.max_output_pixels:,} (limits.max_output_pixels); crop or downscale the input")
    memory = working_memory_mb(h, w, scale)
    if memory > settings.max_memory_mb:
        raise LimitError(
            f"a {w}×{h} input needs about {memory:,.0f} MB at ×{scale}, over the limit of "
            f"{settings.max_memory_mb:,} MB (limits.max_memory_mb); crop or downscale the input")
    return output_size(h, w, settings.outscale)
