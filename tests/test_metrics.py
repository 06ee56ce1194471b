"""PSNR/SSIM follow the Y-channel benchmark convention; LPIPS behaves like a distance."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from utils.evaluation.metrics import LPIPS, psnr_rgb, psnr_y, rgb_to_y, score_pair, ssim_rgb, ssim_y


def _pair(seed=0, size=(96, 80)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: size[0], : size[1]]
    hr = np.stack([(xx * 2 + yy) % 256, (yy * 3) % 256, (xx * yy) % 256], axis=-1).astype(np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-12, 13, hr.shape), 0, 255).astype(np.uint8)
    return sr, hr


def test_y_range():
    assert rgb_to_y(np.zeros((1, 1, 3), np.uint8))[0, 0] == pytest.approx(16.0)
    assert rgb_to_y(np.full((1, 1, 3), 255, np.uint8))[0, 0] == pytest.approx(235.0)


def test_identical_images():
    _, hr = _pair()
    assert psnr_y(hr, hr) == math.inf
    assert psnr_rgb(hr, hr) == math.inf
    assert ssim_y(hr, hr) == pytest.approx(1.0)


def test_known_pair_matches_independent_skimage():
    sr, hr = _pair()
    crop = 4

    def y(img):  # BT.601 studio-range luma, written out per channel
        f = img.astype(np.float64) / 255.0
        return 16.0 + 65.481 * f[..., 0] + 128.553 * f[..., 1] + 24.966 * f[..., 2]

    y_sr, y_hr = y(sr)[crop:-crop, crop:-crop], y(hr)[crop:-crop, crop:-crop]
    assert psnr_y(sr, hr, crop) == pytest.approx(peak_signal_noise_ratio(y_hr, y_sr, data_range=255), abs=1e-10)
    expected_ssim = structural_similarity(y_hr, y_sr, data_range=255, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False)
    assert ssim_y(sr, hr, crop) == pytest.approx(expected_ssim, abs=1e-10)
    mse = np.mean((y_sr - y_hr) ** 2)
    assert psnr_y(sr, hr, crop) == pytest.approx(10 * np.log10(255 ** 2 / mse), abs=1e-9)
    assert 0 < ssim_rgb(sr, hr, crop) < 1


def test_float_and_uint8_inputs_agree():
    sr, hr = _pair()
    assert psnr_y(sr.astype(np.float32) / 255, hr) == pytest.approx(psnr_y(sr, hr), abs=1e-4)


def test_shape_mismatch_is_an_error():
    sr, hr = _pair()
    with pytest.raises(ValueError):
        psnr_y(sr[:-1], hr)


@pytest.fixture(scope="module")
def lpips_alex():
    return LPIPS("alex")


def test_lpips_is_a_distance(lpips_alex):
    _, hr = _pair(size=(64, 64))
    rng = np.random.default_rng(1)
    assert lpips_alex(hr, hr) == pytest.approx(0.0, abs=1e-7)
    dists = []
    for sigma in (5, 20, 60):
        noisy = np.clip(hr + rng.normal(0, sigma, hr.shape), 0, 255).astype(np.uint8)
        dists.append(lpips_alex(noisy, hr))
    assert 0 < dists[0] < dists[1] < dists[2]


def test_lpips_rejects_tiny_images(lpips_alex):
    tiny = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="at least"):
        lpips_alex(tiny, tiny)


def test_score_pair_columns(lpips_alex):
    sr, hr = _pair(size=(64, 64))
    assert set(score_pair(sr, hr, lpips=lpips_alex, rgb=True)) == {"psnr", "ssim", "lpips", "psnr_rgb", "ssim_rgb"}


def test_peak_rss_sees_an_allocation():
    # In a fresh process: in this one an allocator that keeps freed pages (OpenVINO's TBB, loaded by
    # earlier tests) may serve the block from memory that is already resident.
    code = ("import time, numpy as np\nfrom utils.evaluation.metrics import PeakRSS\n"
            "with PeakRSS() as mem:\n    block = np.ones(64 * 2**20, np.uint8)\n    time.sleep(0.1)\n    del block\n"
            "print(mem.delta_mb)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) > 40
