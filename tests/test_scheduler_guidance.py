import pytest

from utils.postprocess.adaptive_scheduler import adaptive_timesteps, extra_steps
from utils.postprocess.guidance import adaptive_guidance, guidance_factor


def test_extra_steps_thresholds():
    assert [extra_steps(c) for c in (0.0, 0.29, 0.3, 0.59, 0.6, 1.0)] == [0, 0, 1, 1, 2, 2]


def test_low_complexity_keeps_base():
    assert adaptive_timesteps(0.1, [200, 100]) == [200, 100]


def test_more_steps_evenly_spaced_and_descending():
    assert adaptive_timesteps(0.4, [200, 100]) == [200, 150, 100]
    assert adaptive_timesteps(0.9, [200, 100]) == [200, 167, 133, 100]
    assert adaptive_timesteps(0.9, [200, 100, 50, 10]) == [200, 155, 110, 65, 20]  # capped at 5, end ≥ 20
    assert adaptive_timesteps(0.9, [250, 200, 150, 100, 50]) == [250, 200, 150, 100, 50]
    assert adaptive_timesteps(0.7, [200]) == [200, 125, 50]  # one base step: space down to 50


def test_short_span_never_repeats_a_timestep():
    for base in ([22, 21], [21], [3]):
        ts = adaptive_timesteps(1.0, base)
        assert all(a > b for a, b in zip(ts, ts[1:])) and ts[0] == base[0]
    with pytest.raises(ValueError):
        adaptive_timesteps(0.5, [100, 200])


def test_guidance_factor_bands():
    assert guidance_factor(0.0) == pytest.approx(0.8)
    assert guidance_factor(0.29) == pytest.approx(0.8967, abs=1e-3)
    assert guidance_factor(0.3) == guidance_factor(0.59) == 1.0
    assert guidance_factor(0.6) == pytest.approx(1.0)
    assert guidance_factor(1.0) == pytest.approx(1.3)
    assert guidance_factor(7.0) == pytest.approx(1.3) and guidance_factor(-1) == pytest.approx(0.8)


def test_adaptive_guidance_scales_and_clamps():
    assert adaptive_guidance(5.0, 1.0) == pytest.approx(6.5)
    assert adaptive_guidance(5.0, 0.0) == pytest.approx(4.0)
    assert adaptive_guidance(1.0, 1.0) == 1.0  # guidance off stays off
    assert adaptive_guidance(1.1, 0.0) == 1.0  # never below 1
