"""Blur kernels of the Real-ESRGAN degradation model (Wang et al., ICCVW 2021), written from their
formulas. Every kernel is a k×k float64 array (k odd) summing to 1, centred on pixel (k//2, k//2).

With pixel offsets x = (dx, dy) from the centre and a covariance Σ = R(θ)·diag(σx², σy²)·R(θ)ᵀ,
the quadratic form q = xᵀ Σ⁻¹ x gives

- Gaussian:             exp(−q / 2)
- generalized Gaussian: exp(−q^β / 2)     (β < 1 heavier tails, β > 1 flatter top)
- plateau:              1 / (1 + q^β)
- sinc (ideal low-pass, cut-off ω_c): ω_c · J₁(ω_c·r) / (2π·r), with the r = 0 limit ω_c² / (4π);
  it imitates ringing and overshoot artefacts.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.special import j1

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def _offsets(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size % 2 != 1 or size < 1:
        raise ValueError(f"kernel size must be a positive odd number (got {size})")
    r = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(r, r)  # (dx, dy): columns, rows


def quadratic_form(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """q = xᵀ Σ⁻¹ x on a size×size grid of offsets (Σ rotated by ``theta`` radians)."""
    dx, dy = _offsets(size)
    cos, sin = math.cos(theta), math.sin(theta)
    # Rotate the offsets into the kernel's principal axes: then Σ⁻¹ is diagonal.
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    return (u / sigma_x) ** 2 + (v / sigma_y) ** 2


def _normalised(kernel: np.ndarray) -> np.ndarray:
    return kernel / kernel.sum()


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    return _normalised(np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, theta)))


def generalized_gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    return _normalised(np.exp(-0.5 * quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def plateau_kernel(size: int, sigma_x: float, sigma_y: float, theta: float, beta: float) -> np.ndarray:
    return _normalised(1.0 / (1.0 + quadratic_form(size, sigma_x, sigma_y, theta) ** beta))


def sinc_kernel(size: int, omega_c: float) -> np.ndarray:
    """Circular ideal low-pass filter with cut-off ``omega_c`` (radians per pixel, in (0, π])."""
    dx, dy = _offsets(size)
    r = np.hypot(dx, dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        kernel = omega_c * j1(omega_c * r) / (2 * math.pi * r)
    kernel[size // 2, size // 2] = omega_c ** 2 / (4 * math.pi)
    return _normalised(kernel)


def random_odd_size(rng: np.random.Generator, max_size: int, min_size: int = 7) -> int:
    """An odd size drawn uniformly from min_size, min_size + 2, ..., max_size."""
    return int(rng.choice(np.arange(min_size, max_size + 1, 2)))


def _beta(rng: np.random.Generator, low: float, high: float) -> float:
    # Half the draws below 1 and half above (when the range straddles 1), so both tail shapes occur
    # equally often whatever the range's width on either side.
    if low < 1 < high:
        return float(rng.uniform(low, 1.0) if rng.uniform() < 0.5 else rng.uniform(1.0, high))
    return float(rng.uniform(low, high))


def random_mixed_kernel(rng: np.random.Generator, size: int, kernel_probs: dict[str, float],
                        sigma_range: tuple[float, float], betag_range: tuple[float, float],
                        betap_range: tuple[float, float]) -> np.ndarray:
    """One kernel of a type drawn with ``kernel_probs`` (keys from :data:`KERNEL_TYPES`).

    iso: σx = σy, no rotation; aniso: σx, σy drawn independently and θ uniform in [−π, π].
    """
    unknown = set(kernel_probs) - set(KERNEL_TYPES)
    if unknown:
        raise ValueError(f"unknown kernel types {sorted(unknown)}; choose from {', '.join(KERNEL_TYPES)}")
    names = list(kernel_probs)
    probs = np.asarray([kernel_probs[n] for n in names], dtype=np.float64)
    kind = names[int(rng.choice(len(names), p=probs / probs.sum()))]
    sigma_x = float(rng.uniform(*sigma_range))
    if kind.endswith("aniso"):
        sigma_y = float(rng.uniform(*sigma_range))
        theta = float(rng.uniform(-math.pi, math.pi))
    else:
        sigma_y, theta = sigma_x, 0.0
    if kind.startswith("generalized"):
        return generalized_gaussian_kernel(size, sigma_x, sigma_y, theta, _beta(rng, *betag_range))
    if kind.startswith("plateau"):
        return plateau_kernel(size, sigma_x, sigma_y, theta, _beta(rng, *betap_range))
    return gaussian_kernel(size, sigma_x, sigma_y, theta)


def random_sinc_kernel(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sinc kernel with ω_c uniform in [π/3, π] for sizes below 13, else [π/5, π] (a larger support
    can carry a lower cut-off without truncating its ringing)."""
    low = math.pi / 3 if size < 13 else math.pi / 5
    return sinc_kernel(size, float(rng.uniform(low, math.pi)))
