"""Image-quality metrics as the super-resolution literature reports them, plus a peak-memory probe.

PSNR/SSIM follow the usual benchmark convention: Y channel of BT.601 YCbCr in the studio range
16–235 (``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for RGB in [0, 1]), ``scale`` pixels cropped
from every border, Gaussian-window SSIM (sigma 1.5, population covariance) like the MATLAB reference.
LPIPS (AlexNet, v0.1 by default) compares whole RGB images mapped to [-1, 1].
Images are H×W×3 RGB, either uint8 or float in [0, 1].
"""
from __future__ import annotations

import math
import os
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Optional

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

if TYPE_CHECKING:
    import torch


Y_WEIGHTS = np.array([65.481, 128.553, 24.966])
# AlexNet's first layers reduce the image below one pixel for smaller inputs.
LPIPS_MIN_SIZE = 31


def to_float01(img: np.ndarray) -> np.ndarray:
    """H×W×3 uint8 or float image -> float64 in [0, 1]."""
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 RGB image, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img.astype(np.float64) / 255.0
    return np.clip(img.astype(np.float64), 0.0, 1.0)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] (float64), the channel the SR benchmarks are scored on."""
    return 16.0 + to_float01(img) @ Y_WEIGHTS


def crop_border(img: np.ndarray, border: int) -> np.ndarray:
    if border <= 0:
        return img
    if img.shape[0] <= 2 * border or img.shape[1] <= 2 * border:
        raise ValueError(f"image {img.shape[1]}×{img.shape[0]} is too small to crop {border} px per border")
    return img[border:-border, border:-border]


def _check_pair(sr: np.ndarray, hr: np.ndarray) -> None:
    if sr.shape != hr.shape:
        raise ValueError(f"SR shape {sr.shape} differs from HR shape {hr.shape}")


def _psnr(hr: np.ndarray, sr: np.ndarray, data_range: float) -> float:
    # skimage divides by the MSE: identical images would give a divide-by-zero warning, not a value.
    if np.array_equal(hr, sr):
        return math.inf
    return float(peak_signal_noise_ratio(hr, sr, data_range=data_range))


def _ssim(hr: np.ndarray, sr: np.ndarray, data_range: float, channel_axis: Optional[int] = None) -> float:
    return float(structural_similarity(hr, sr, data_range=data_range, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, channel_axis=channel_axis))


def psnr_y(sr: np.ndarray, hr: np.ndarray, crop: int = 4) -> float:
    """PSNR (dB) on Y in [16, 235] scaled to a 255 peak; ``inf`` for identical images."""
    _check_pair(sr, hr)
    return _psnr(crop_border(rgb_to_y(hr), crop), crop_border(rgb_to_y(sr), crop), 255.0)


def ssim_y(sr: np.ndarray, hr: np.ndarray, crop: int = 4) -> float:
    _check_pair(sr, hr)
    return _ssim(crop_border(rgb_to_y(hr), crop), crop_border(rgb_to_y(sr), crop), 255.0)


def psnr_rgb(sr: np.ndarray, hr: np.ndarray, crop: int = 4) -> float:
    """PSNR over all three RGB channels on the 0–255 scale."""
    _check_pair(sr, hr)
    return _psnr(crop_border(to_float01(hr) * 255, crop), crop_border(to_float01(sr) * 255, crop), 255.0)


def ssim_rgb(sr: np.ndarray, hr: np.ndarray, crop: int = 4) -> float:
    """SSIM averaged over the RGB channels on the 0–255 scale."""
    _check_pair(sr, hr)
    return _ssim(crop_border(to_float01(hr) * 255, crop), crop_border(to_float01(sr) * 255, crop), 255.0,
                 channel_axis=2)


@lru_cache(maxsize=None)
def _shared_model(net: str, source: str) -> torch.nn.Module:
    # Building initialises a whole random torchvision net first (seconds); the eval model is read-only,
    # so one per process is enough.
    from utils.evaluation.lpips_offline import build_lpips  # torch is imported for LPIPS only (see LPIPS)

    return build_lpips(net, source)


class LPIPS:
    """Callable LPIPS distance between two RGB images (lower is more similar).

    The only torch user here: torch is imported on use, so PSNR/SSIM (and NIQE, which reuses
    ``rgb_to_y``) load without it.
    """

    def __init__(self, net: str = "alex", source: str = "auto"):
        self.net = net
        self.model = _shared_model(net, source)

    @staticmethod
    def _tensor(img: np.ndarray) -> torch.Tensor:
        import torch

        return torch.from_numpy(to_float01(img).transpose(2, 0, 1)).float()[None] * 2 - 1

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> float:
        _check_pair(sr, hr)
        if min(sr.shape[:2]) < LPIPS_MIN_SIZE:
            raise ValueError(f"LPIPS needs images of at least {LPIPS_MIN_SIZE}×{LPIPS_MIN_SIZE} pixels")
        import torch

        with torch.inference_mode():
            return float(self.model(self._tensor(sr), self._tensor(hr)).item())


def score_pair(sr: np.ndarray, hr: np.ndarray, crop: int = 4, lpips: Optional[LPIPS] = None,
               rgb: bool = False) -> dict[str, float]:
    """The benchmark metrics of one image pair: psnr, ssim (Y), lpips, and psnr_rgb/ssim_rgb if ``rgb``."""
    scores = {"psnr": psnr_y(sr, hr, crop), "ssim": ssim_y(sr, hr, crop)}
    if lpips is not None:
        scores["lpips"] = lpips(sr, hr)
    if rgb:
        scores["psnr_rgb"] = psnr_rgb(sr, hr, crop)
        scores["ssim_rgb"] = ssim_rgb(sr, hr, crop)
    return scores


def current_rss_mb() -> float:
    """Resident set size of this process in MiB (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return 0.0


class PeakRSS:
    """Context manager sampling this process's RSS in a thread; ``peak_mb`` is the maximum seen.

    ru_maxrss only ever grows over the process's life, so it cannot attribute a peak to one call;
    sampling can (native ncnn/torch allocations included), at the cost of missing spikes < interval.
    """

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self.base_mb = self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        self.base_mb = self.peak_mb = current_rss_mb()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())

    @property
    def delta_mb(self) -> float:
        """Growth of the RSS peak over the RSS at entry."""
        return self.peak_mb - self.base_mb
