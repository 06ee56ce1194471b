"""NIQE, the no-reference "Natural Image Quality Evaluator" (Mittal, Soundararajan & Bovik 2013); lower is better.

Follows the MATLAB reference ``niqe.m`` (and BasicSR's port of it): the Y channel of MATLAB's rgb2ycbcr
rounded to integers, 96×96 blocks, MSCN coefficients with the model's 7×7 Gaussian window, 18 AGGD
features per block at full and half scale (MATLAB's antialiased bicubic ``imresize(…, 0.5)``,
reimplemented here), and the Mahalanobis-like distance between the multivariate Gaussian fitted to the
image's blocks and the one fitted to the LIVE pristine images.

The pristine model is BasicSR's ``niqe_pris_params.npz`` (converted from the MATLAB release's
``modelparameters.mat``), extracted from the ``basicsr==1.4.2`` sdist on PyPI by
``python -m utils.evaluation.niqe`` into ``weights/``; both the sdist and the file are sha256-checked.
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tarfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np
from scipy.ndimage import correlate
from scipy.special import gamma

from utils.checksums import file_sha256
from utils.config import WEIGHTS_DIR
from utils.evaluation.metrics import rgb_to_y

BASICSR_REQUIREMENT = "basicsr==1.4.2"
SDIST_NAME = "basicsr-1.4.2.tar.gz"
SDIST_SHA256 = "b89b595a87ef964cda9913b4d99380ddb6554c965577c0c10cb7b78e31301e87"
SDIST_SIZE = 172_524
SDIST_PATH = WEIGHTS_DIR / SDIST_NAME
PARAMS_MEMBER = "basicsr-1.4.2/basicsr/metrics/niqe_pris_params.npz"
PARAMS_SHA256 = "2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296"
PARAMS_SIZE = 11_850
PARAMS_PATH = WEIGHTS_DIR / "niqe_pris_params.npz"
FETCH_COMMAND = "python -m utils.evaluation.niqe"

BLOCK = 96  # the block size the pristine model was fitted with
# Neighbour offsets (rows, columns) of the paired products: horizontal, vertical, both diagonals.
PAIR_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))
# Bound on the float64 rounding error of an MSCN deviation: values up to 255 go through at most 16
# resize taps and the 49-tap window, so a deviation that is exactly 0 (a flat neighbourhood) comes out
# within ~65 ulps of 255 (3.6e-12 with a 2× margin); the smallest real deviations are orders of
# magnitude larger. Derived, not fitted: every bound from 1e-12 to 1e-9 gives the same NIQE on all of
# Set14, while leaving the residues in moves NIQE by up to 0.3 (face.png), their signs deciding which
# half of the AGGD flat pixels fall in (see tests/test_niqe.py).
ROUNDING_NOISE = 64 * 255 * np.finfo(np.float64).eps


class ImageTooSmall(ValueError):
    """The image holds fewer than two NIQE blocks, so no covariance can be fitted to it."""


@dataclass(frozen=True)
class PristineModel:
    """The multivariate Gaussian of the pristine images' features and the MSCN window."""
    mu: np.ndarray      # (36,)
    cov: np.ndarray     # (36, 36)
    window: np.ndarray  # (7, 7), sums to 1


def verify_file(path: Path, sha256: str, size: int, what: str) -> None:
    """Raise ValueError unless ``path`` has exactly ``size`` bytes with the given sha256."""
    actual_size = path.stat().st_size
    actual = file_sha256(path) if actual_size == size else None
    if actual != sha256:
        raise ValueError(f"{path} is not {what}: expected {size} bytes with sha256 {sha256}, got "
                         f"{actual_size} bytes" + (f" with sha256 {actual}" if actual else "") + "; refusing to use it")


def download_sdist(dest_dir: Path) -> Path:
    """``pip download`` the basicsr sdist into ``dest_dir``, hash-pinned, and return its path.

    The pin makes pip check the hash before it runs the sdist's setup.py (to read its metadata). No build
    isolation: isolated, pip would build setup.py's numpy/torch/cython build requirements from source.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    pin = dest_dir / "basicsr-pin.txt"
    pin.write_text(f"{BASICSR_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "--no-build-isolation", "-d", str(dest_dir), "-r", str(pin)], check=True)
    sdist = dest_dir / SDIST_NAME
    verify_file(sdist, SDIST_SHA256, SDIST_SIZE, f"the {BASICSR_REQUIREMENT} sdist")
    return sdist


def extract_params(sdist: Path, dest: Path = PARAMS_PATH) -> Path:
    """Copy the pristine model out of the verified sdist to ``dest`` (atomically) and return ``dest``."""
    verify_file(sdist, SDIST_SHA256, SDIST_SIZE, f"the {BASICSR_REQUIREMENT} sdist")
    with tarfile.open(sdist, "r:gz") as tar:
        data = tar.extractfile(PARAMS_MEMBER).read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")  # per process: two installs may run at once
    tmp.write_bytes(data)
    try:
        verify_file(tmp, PARAMS_SHA256, PARAMS_SIZE, f"{PARAMS_MEMBER} of {SDIST_NAME}")
    except ValueError:
        tmp.unlink()
        raise
    tmp.replace(dest)
    return dest


def fetch_params(dest: Path = PARAMS_PATH, sdist: Optional[Path] = None) -> str:
    """Make sure ``dest`` holds the verified pristine model; says what was done.

    A verified file already there is kept without touching the network; otherwise the parameters come
    from ``sdist`` or, without one, from a fresh hash-pinned ``pip download``.
    """
    if dest.is_file():
        try:
            verify_file(dest, PARAMS_SHA256, PARAMS_SIZE, "the NIQE pristine model")
            return f"{dest} already present (sha256 verified)"
        except ValueError:
            pass  # a damaged or foreign file: replaced below
    if sdist is not None:
        return f"extracted {extract_params(sdist, dest)} from {sdist}"
    # The sdist (172 kB) is kept beside the parameters: the tests compare against its own NIQE code.
    return f"extracted {extract_params(download_sdist(dest.parent), dest)} from a downloaded {SDIST_NAME}"


def load_params(path: Path = PARAMS_PATH) -> PristineModel:
    """The verified pristine model; FileNotFoundError naming the fetch command when it is missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NIQE pristine model {path} not found; fetch it with `{FETCH_COMMAND}` "
                                "(part of `make setup`)")
    verify_file(path, PARAMS_SHA256, PARAMS_SIZE, "the NIQE pristine model")
    with np.load(path, allow_pickle=False) as npz:
        return PristineModel(mu=npz["mu_pris_param"].reshape(36), cov=npz["cov_pris_param"],
                             window=npz["gaussian_window"])


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (Keys, a = -0.5), zero outside |x| < 2; any shape, float64."""
    ax = np.abs(np.asarray(x, dtype=np.float64))
    near = 1.5 * ax**3 - 2.5 * ax**2 + 1
    far = -0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2
    return np.where(ax <= 1, near, np.where(ax < 2, far, 0.0))


def resize_matrix(in_len: int, out_len: int, scale: float) -> np.ndarray:
    """(out_len, in_len) matrix M such that ``M @ v`` is MATLAB's bicubic imresize of the vector ``v``.

    As MATLAB's ``contributions``: output pixel i (1-based) is centred on input coordinate
    u = i/scale + (1 - 1/scale)/2; when downscaling, the kernel is stretched by 1/scale (antialiasing);
    each row's weights are normalised to sum to 1; taps outside the image are mirrored (symmetric padding,
    the edge pixel repeated), so their weight lands on the mirrored pixel.
    """
    widen = scale < 1
    width = 4.0 / scale if widen else 4.0
    centres = np.arange(1, out_len + 1) / scale + 0.5 * (1 - 1 / scale)
    taps = np.floor(centres - width / 2)[:, None] + np.arange(math.ceil(width) + 2)  # 1-based input indices
    distance = centres[:, None] - taps
    weights = scale * cubic(scale * distance) if widen else cubic(distance)
    weights /= weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_len), np.arange(in_len)[::-1]])
    source = mirror[(taps.astype(np.int64) - 1) % (2 * in_len)]
    matrix = np.zeros((out_len, in_len))
    np.add.at(matrix, (np.repeat(np.arange(out_len), taps.shape[1]), source.ravel()), weights.ravel())
    return matrix


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """MATLAB ``imresize(img, scale)`` (bicubic, antialiased) of an H×W or H×W×C image, in float64.

    The output is ceil(scale·H) × ceil(scale·W) (×C), not rounded or clipped. Rows are resized first,
    as MATLAB does for equal scales; the result is linear, so the order only moves float rounding.
    """
    img = np.asarray(img, dtype=np.float64)
    h, w = img.shape[:2]
    out_h, out_w = math.ceil(scale * h), math.ceil(scale * w)
    rows = np.tensordot(resize_matrix(h, out_h, scale), img, axes=(1, 0))
    return np.moveaxis(np.tensordot(resize_matrix(w, out_w, scale), rows, axes=(1, 1)), 0, 1)


def luma(img: np.ndarray) -> np.ndarray:
    """The channel NIQE scores: H×W float64 of integers in [0, 255].

    H×W×3 RGB gives MATLAB's rgb2ycbcr Y (BT.601, 16–235); an H×W image is taken as gray. uint8 images
    are in [0, 255], float images in [0, 1] (clipped). The result is rounded as MATLAB's uint8
    rgb2ycbcr output is (halves up), which the reference implementations rely on.
    """
    img = np.asarray(img)
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"expected a uint8 image or a float image in [0, 1], got dtype {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 3:
        value = rgb_to_y(img)
    elif img.ndim == 2:
        value = img.astype(np.float64) if img.dtype == np.uint8 else np.clip(img.astype(np.float64), 0, 1) * 255
    else:
        raise ValueError(f"expected an H×W×3 RGB or H×W gray image, got shape {img.shape}")
    return np.floor(value + 0.5)


def mscn(img: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (paper eq. 1) of an H×W image, same shape.

    Local mean and deviation use ``window`` with replicated borders (MATLAB ``imfilter(…, 'replicate')``).
    Deviations from the mean below ROUNDING_NOISE are set to exactly 0, which is what they are on flat
    areas; left as ±1e-14 residues, their signs would decide which half of the AGGD they fall in.
    """
    mu = correlate(img, window, mode="nearest")
    sigma = np.sqrt(np.abs(correlate(img * img, window, mode="nearest") - mu * mu))
    deviation = img - mu
    deviation[np.abs(deviation) < ROUNDING_NOISE] = 0.0
    return deviation / (sigma + 1)


def blocks(img: np.ndarray, size: int) -> np.ndarray:
    """Non-overlapping size×size blocks of an H×W image, row-major: (H//size · W//size, size, size)."""
    rows, cols = img.shape[0] // size, img.shape[1] // size
    grid = img[: rows * size, : cols * size].reshape(rows, size, cols, size)
    return grid.swapaxes(1, 2).reshape(rows * cols, size, size)


@lru_cache(maxsize=1)
def _aggd_table() -> tuple[np.ndarray, np.ndarray]:
    """The reference's search grid: shapes alpha = 0.2:0.001:10 and their ratio Γ(2/α)² / (Γ(1/α)Γ(3/α))."""
    alpha = np.linspace(0.2, 10.0, 9801)
    return alpha, gamma(2 / alpha) ** 2 / (gamma(1 / alpha) * gamma(3 / alpha))


def fit_aggd(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit of each row of (N, M) samples: (alpha, beta_left, beta_right), each (N,).

    As the reference, the shape is the grid point nearest to the normalised moment ratio; a row without
    negative or positive samples gives NaN scales (and alpha 0.2, the first grid point, like MATLAB's min).
    """
    alphas, ratios = _aggd_table()
    squares = samples * samples
    with np.errstate(invalid="ignore", divide="ignore"):
        left = np.sqrt((squares * (samples < 0)).sum(1) / (samples < 0).sum(1))
        right = np.sqrt((squares * (samples > 0)).sum(1) / (samples > 0).sum(1))
        g = left / right
        r_hat = np.abs(samples).mean(1) ** 2 / squares.mean(1)
        r_norm = r_hat * (g**3 + 1) * (g + 1) / (g**2 + 1) ** 2
    alpha = alphas[np.argmin((ratios[None, :] - r_norm[:, None]) ** 2, axis=1)]
    spread = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left * spread, right * spread


def block_features(coeffs: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of each of (N, b, b) MSCN blocks: (N, 18).

    Shape and mean scale of the coefficients, then for each neighbour direction the shape, mean
    (paper eq. 8), left and right scales of the products with the circularly shifted block.
    """
    n = coeffs.shape[0]
    alpha, left, right = fit_aggd(coeffs.reshape(n, -1))
    features = [alpha, (left + right) / 2]
    for shift in PAIR_SHIFTS:
        products = coeffs * np.roll(coeffs, shift, axis=(1, 2))
        alpha, left, right = fit_aggd(products.reshape(n, -1))
        features += [alpha, (right - left) * gamma(2 / alpha) / gamma(1 / alpha), left, right]
    return np.stack(features, axis=1)


def niqe_features(y: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(blocks, 36) features of an H×W image in [0, 255]: 18 at full scale, 18 at half scale."""
    rows, cols = y.shape[0] // BLOCK, y.shape[1] // BLOCK
    y = y[: rows * BLOCK, : cols * BLOCK]
    half = imresize(y / 255.0, 0.5) * 255.0  # as the reference: resized on [0, 1], back to [0, 255]
    return np.concatenate([block_features(blocks(mscn(y, window), BLOCK)),
                           block_features(blocks(mscn(half, window), BLOCK // 2))], axis=1)


def mvg_distance(features: np.ndarray, model: PristineModel) -> float:
    """NIQE's distance (paper eq. 10) between the Gaussian of (N, 36) block features and the pristine one.

    Blocks with a NaN feature are left out of the covariance (MATLAB ``nancov``); NaN when fewer than two
    blocks remain (a flat image, for one).
    """
    finite = features[~np.isnan(features).any(axis=1)]
    if len(finite) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns are impossible once finite rows exist
        mu = np.nanmean(features, axis=0)
    diff = model.mu - mu
    spread = np.linalg.pinv((model.cov + np.cov(finite, rowvar=False)) / 2)
    return float(np.sqrt(diff @ spread @ diff))


def niqe(img: np.ndarray, crop_border: int = 0, model: Optional[PristineModel] = None) -> float:
    """NIQE of one image (lower is more natural).

    ``img``: H×W×3 RGB (scored on its Y channel) or H×W gray; uint8 in [0, 255] or float in [0, 1].
    ``crop_border`` pixels are dropped from every side first; what remains must hold at least two 96×96
    blocks (ImageTooSmall otherwise). ``model``: the pristine model, loaded from weights/ by default.
    """
    y = luma(img)
    if crop_border > 0:
        y = y[crop_border:-crop_border, crop_border:-crop_border]
    h, w = y.shape
    if (h // BLOCK) * (w // BLOCK) < 2:
        raise ImageTooSmall(f"NIQE needs at least two {BLOCK}×{BLOCK} blocks; the image is {w}×{h} after "
                            f"cropping {crop_border} px per border")
    model = model or load_params()
    return mvg_distance(niqe_features(y, model.window), model)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=f"Install the NIQE pristine model into {PARAMS_PATH}.")
    parser.add_argument("--sdist", type=Path, help=f"use this {SDIST_NAME} instead of `pip download`ing it")
    args = parser.parse_args(argv)
    print(fetch_params(sdist=args.sdist))


if __name__ == "__main__":
    main()
