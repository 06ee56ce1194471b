"""Scale classifier-free guidance with image complexity."""
from __future__ import annotations

LOW, HIGH = 0.3, 0.6
LOW_FACTOR = (0.8, 0.9)  # factor at complexity 0 and at 0.3
MAX_FACTOR = 1.3         # reached at complexity 1


def guidance_factor(complexity: float) -> float:
    """Multiplier for the guidance scale; complexity is clamped to [0, 1].

    [0, 0.3): linear 0.8 → 0.9 (flat images need less push, which would over-sharpen them);
    [0.3, 0.6): 1.0; [0.6, 1]: linear 1.0 → 1.3.
    """
    c = min(max(float(complexity), 0.0), 1.0)
    if c < LOW:
        return LOW_FACTOR[0] + (LOW_FACTOR[1] - LOW_FACTOR[0]) * c / LOW
    if c < HIGH:
        return 1.0
    return 1.0 + (MAX_FACTOR - 1.0) * (c - HIGH) / (1.0 - HIGH)


def adaptive_guidance(cfg_scale: float, complexity: float) -> float:
    """``cfg_scale`` × :func:`guidance_factor`, never below 1.

    A scale ≤ 1 means guidance is off (InvSR runs the negative prompt only above 1) and is returned
    unchanged, so complexity never switches guidance on and doubles the UNet cost; an enabled scale is
    clamped to ≥ 1 so it never turns into anti-guidance.
    """
    if cfg_scale <= 1.0:
        return float(cfg_scale)
    return max(1.0, float(cfg_scale) * guidance_factor(complexity))
