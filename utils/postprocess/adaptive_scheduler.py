"""Pick the diffusion timesteps from image complexity: more detail, more (finer) steps."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from utils.config import MAX_STEPS

MIN_TIMESTEP = 20
# Lower end for a single base timestep, which has no T[-1] below T[0] to space towards
# (50 is the smallest timestep of the reference's default lists).
SINGLE_STEP_END = 50


def extra_steps(complexity: float) -> int:
    """0 below 0.3, 1 below 0.6, else 2."""
    return 0 if complexity < 0.3 else 1 if complexity < 0.6 else 2


def adaptive_timesteps(complexity: float, timesteps: Sequence[int]) -> list[int]:
    """Timesteps for an image of ``complexity`` (a float in [0, 1], e.g. image_complexity().mean()).

    ``timesteps``: the base list, descending. Below complexity 0.3 it is returned unchanged; otherwise
    ``len + extra_steps`` (at most 5) integers evenly spaced from T[0] down to max(T[-1], 20) (to 50 when
    the base has one step), rounded and strictly descending. When the span is too short for that many
    distinct integers, fewer steps are returned.
    """
    base = [int(t) for t in timesteps]
    if not base or any(a <= b for a, b in zip(base, base[1:])):
        raise ValueError(f"timesteps must be a non-empty strictly descending list (got {base})")
    extra = extra_steps(float(complexity))
    n = min(len(base) + extra, MAX_STEPS)
    if extra == 0 or n <= len(base):
        return base
    start = base[0]
    end = max(base[-1], MIN_TIMESTEP) if len(base) > 1 else max(min(SINGLE_STEP_END, start - 1), MIN_TIMESTEP)
    n = min(n, start - end + 1)
    if n <= len(base):
        return base
    return [int(t) for t in np.rint(np.linspace(start, end, n))]
