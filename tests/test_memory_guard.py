"""The memory guard (limits.max_memory_mb) against a real measurement of one image's peak memory."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_settings
from utils.pipeline.limits import LimitError, check_limits

ROOT = Path(__file__).resolve().parent.parent
MB = 2 ** 20


def measured_peak(backend: str, h: int, w: int, overrides: dict) -> dict:
    """scripts/measure_memory.py's probe in a fresh process: peak bytes over the loaded backend, and the
    guard's estimate (MB) for the same image and settings."""
    sets = [arg for key, value in overrides.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    done = subprocess.run([sys.executable, "-m", "scripts.measure_memory", "--probe", backend, str(h), str(w),
                           *sets], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak memory is read from Linux's /proc")
def test_the_guard_covers_the_measured_peak_of_a_mid_size_image_without_overstating_it():
    # Neither size nor tile size is one the guard's figures were fitted on; default post-processing. ncnn:
    # the figures were fitted on it; OpenVINO, which auto picks where the CPU has BF16, peaks lower
    # (461 MB against the guard's 778 here), so the guard stays on the safe side for it.
    result = measured_peak("span", 360, 480, {"span.tile_size": 192, "runtime": "ncnn"})
    peak_mb = result["peak_bytes"] / MB
    assert peak_mb <= result["guard_mb"] <= 1.5 * peak_mb, f"guard {result['guard_mb']:.0f} MB, peak {peak_mb:.0f} MB"


def test_the_guard_refuses_what_would_not_fit_and_names_the_limit(cfg):
    settings = run_settings(cfg, "span", {"limits.max_memory_mb": 1000})
    check_limits(100, 100, 4, settings)  # 0.16 MP out: a few hundred MB at most
    with pytest.raises(LimitError, match=r"a 1000×1000 input needs about [\d,]+ MB at ×4, over the limit of "
                                         r"1,000 MB \(limits\.max_memory_mb\)"):
        check_limits(1000, 1000, 4, settings)  # 16 MP out: blending's 68 B/px alone are over 1 GB
