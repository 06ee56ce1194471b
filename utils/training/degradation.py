"""The Real-ESRGAN second-order degradation (Wang et al., ICCVW 2021) that makes ×4 training inputs
from clean crops, on the CPU with OpenCV, one image at a time.

    lq = degrade(gt, params, rng)   # gt: H×W×3 float32 RGB in [0, 1], H and W multiples of params.scale
                                    # lq: (H/scale)×(W/scale)×3 float32 in [0, 1], quantised to 1/255 steps

Pipeline: [blur → random resize → Gaussian or Poisson noise → JPEG] (first order), the same again
with its own parameters with probability ``second_order_prob`` (its blur itself with probability
``blur_prob``), then, in random order, [resize to H/scale × W/scale + optional sinc filter] and JPEG.
Every random choice comes from ``rng``, so a seed fixes the output exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import cv2
import numpy as np

from utils.training.kernels import random_mixed_kernel, random_odd_size, random_sinc_kernel, sinc_kernel

RESIZE_MODES = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_CUBIC)  # area, bilinear, bicubic, drawn uniformly
FINAL_SINC_OMEGA = (np.pi / 3, np.pi)


@dataclass(frozen=True)
class StageParams:
    """One order of degradation. Ranges are [low, high] drawn uniformly; noise σ is on the 0-255 scale."""

    kernel_size: int                         # largest blur kernel; each draw takes an odd size in [7, this]
    kernel_probs: Mapping[str, float]        # blur kernel type -> probability (see utils.training.kernels)
    blur_prob: float
    blur_sigma: tuple[float, float]
    betag_range: tuple[float, float]         # generalized Gaussian shape β
    betap_range: tuple[float, float]         # plateau shape β
    sinc_prob: float                         # a sinc kernel instead of the mixed one
    resize_prob: tuple[float, float, float]  # up, down, keep
    resize_range: tuple[float, float]        # scale factor (up draws from [1, high], down from [low, 1])
    gaussian_noise_prob: float               # else Poisson
    noise_range: tuple[float, float]
    poisson_scale_range: tuple[float, float]
    gray_noise_prob: float                   # the same noise on all three channels
    jpeg_range: tuple[int, int]              # quality


@dataclass(frozen=True)
class DegradationParams:
    scale: int
    first: StageParams
    second: StageParams
    second_order_prob: float
    final_sinc_prob: float
    final_kernel_size: int

    @classmethod
    def from_config(cls, cfg: Mapping) -> "DegradationParams":
        """From the ``degradation`` section of a training YAML (plain mapping or OmegaConf)."""
        def stage(section: Mapping) -> StageParams:
            values = {f.name: section[f.name] for f in fields(StageParams)}
            values["kernel_probs"] = dict(values["kernel_probs"])
            for key, value in values.items():
                if key != "kernel_probs" and not isinstance(value, (int, float)):
                    values[key] = tuple(value)
            return StageParams(**values)

        return cls(scale=int(cfg["scale"]), first=stage(cfg["first"]), second=stage(cfg["second"]),
                   second_order_prob=float(cfg["second_order_prob"]), final_sinc_prob=float(cfg["final_sinc_prob"]),
                   final_kernel_size=int(cfg["final_kernel_size"]))


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    # Reflect padding (without repeating the edge pixel), as the reference degradations do.
    return cv2.filter2D(img, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)


def blur(img: np.ndarray, p: StageParams, rng: np.random.Generator) -> np.ndarray:
    size = random_odd_size(rng, p.kernel_size)
    if rng.uniform() < p.sinc_prob:
        kernel = random_sinc_kernel(rng, size)
    else:
        kernel = random_mixed_kernel(rng, size, p.kernel_probs, p.blur_sigma, p.betag_range, p.betap_range)
    return _filter(img, kernel)


def resize(img: np.ndarray, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Resize to height×width with an interpolation drawn from area, bilinear and bicubic."""
    mode = RESIZE_MODES[int(rng.integers(len(RESIZE_MODES)))]
    return cv2.resize(img, (max(1, width), max(1, height)), interpolation=mode)


def _random_scale(p: StageParams, rng: np.random.Generator) -> float:
    direction = int(rng.choice(3, p=np.asarray(p.resize_prob) / np.sum(p.resize_prob)))
    if direction == 0:
        return float(rng.uniform(1.0, p.resize_range[1]))
    if direction == 1:
        return float(rng.uniform(p.resize_range[0], 1.0))
    return 1.0


def _gray(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)[..., None]


def gaussian_noise(img: np.ndarray, p: StageParams, rng: np.random.Generator) -> np.ndarray:
    sigma = rng.uniform(*p.noise_range) / 255.0
    channels = 1 if rng.uniform() < p.gray_noise_prob else 3
    noise = rng.standard_normal((*img.shape[:2], channels)).astype(np.float32) * sigma
    return img + noise  # a 1-channel noise broadcasts to the same value on R, G and B


def poisson_noise(img: np.ndarray, p: StageParams, rng: np.random.Generator) -> np.ndarray:
    """Shot noise: Poisson counts at a photon level set by the number of distinct intensities (rounded
    up to a power of two), scaled by a factor drawn from ``poisson_scale_range``."""
    scale = rng.uniform(*p.poisson_scale_range)
    source = _gray(img) if rng.uniform() < p.gray_noise_prob else img
    source = np.clip(source, 0.0, 1.0)
    levels = 2.0 ** np.ceil(np.log2(max(2, len(np.unique(source)))))
    noise = rng.poisson(source * levels).astype(np.float32) / levels - source
    return img + noise * scale


def jpeg(img: np.ndarray, quality_range: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """JPEG round trip at a quality drawn from ``quality_range`` (inclusive), through OpenCV."""
    quality = int(rng.integers(quality_range[0], quality_range[1] + 1))
    bgr = cv2.cvtColor(to_uint8(img), cv2.COLOR_RGB2BGR)  # OpenCV's encoder expects BGR order
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the training image")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _stage(img: np.ndarray, p: StageParams, target_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """blur → resize (relative to ``target_hw``) → noise → JPEG."""
    if rng.uniform() < p.blur_prob:
        img = blur(img, p, rng)
    scale = _random_scale(p, rng)
    img = resize(img, int(target_hw[0] * scale), int(target_hw[1] * scale), rng)
    noisy = gaussian_noise if rng.uniform() < p.gaussian_noise_prob else poisson_noise
    img = np.clip(noisy(img, p, rng), 0.0, 1.0)
    return jpeg(img, p.jpeg_range, rng)


def _resize_and_sinc(img: np.ndarray, params: DegradationParams, out_hw: tuple[int, int],
                     rng: np.random.Generator) -> np.ndarray:
    img = resize(img, out_hw[0], out_hw[1], rng)
    if rng.uniform() < params.final_sinc_prob:
        size = random_odd_size(rng, params.final_kernel_size)
        img = _filter(img, sinc_kernel(size, float(rng.uniform(*FINAL_SINC_OMEGA))))
    return img


def degrade(gt: np.ndarray, params: DegradationParams, rng: np.random.Generator) -> np.ndarray:
    """H×W×3 float32 RGB in [0, 1] -> (H/scale)×(W/scale)×3 float32 in [0, 1] (multiples of 1/255)."""
    h, w = gt.shape[:2]
    if gt.ndim != 3 or gt.shape[2] != 3 or h % params.scale or w % params.scale:
        raise ValueError(f"expected an H×W×3 image with sides divisible by {params.scale}, got {gt.shape}")
    img = np.ascontiguousarray(gt, dtype=np.float32)
    # The first order resizes relative to the input size, the second relative to the output size.
    img = _stage(img, params.first, (h, w), rng)
    out_hw = (h // params.scale, w // params.scale)
    if rng.uniform() < params.second_order_prob:
        img = _stage(img, params.second, out_hw, rng)
    if rng.uniform() < 0.5:
        img = jpeg(_resize_and_sinc(img, params, out_hw, rng), params.second.jpeg_range, rng)
    else:
        img = _resize_and_sinc(jpeg(img, params.second.jpeg_range, rng), params, out_hw, rng)
    return to_uint8(img).astype(np.float32) / 255.0
