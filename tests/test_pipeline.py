"""The post-processing chain as the CLI, app and API run it (utils.pipeline.run_pipeline)."""
import pytest
import torch

from tiny_sd import tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)
from utils.adaptive_scheduler import adaptive_timesteps
from utils.backends import create_backend
from utils.color_fix import color_fix
from utils.complexity import image_complexity
from utils.config import with_overrides
from utils.enhancement import enhance_edges
from utils.fusion import fuse
from utils.pipeline import bicubic_reference, check_stages, run_pipeline, to_tensor


def crop(butterfly, size=24):
    return to_tensor(butterfly[100:100 + size, 60:60 + size])


def test_chain_order_and_values_match_the_stages_run_by_hand(cfg, butterfly):
    lr = crop(butterfly)
    base = with_overrides(cfg, {"color_fix": "none"})
    plain, _ = run_pipeline(lr, base, create_backend("realesrgan", base))
    full = with_overrides(cfg, {"color_fix": "ycbcr", "postprocess.attention_fusion": True,
                                "postprocess.fusion_method": "weighted", "postprocess.edge_enhancement": 0.4})
    out, info = run_pipeline(lr, full, create_backend("realesrgan", full))
    ref = bicubic_reference(lr, (96, 96))
    expected = enhance_edges(fuse([color_fix(plain, ref, "ycbcr"), ref], "weighted"), 0.4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert info.stages == ["fusion weighted", "edges 0.40"] and info.color_fix == "ycbcr"
    assert info.complexity == pytest.approx(float(image_complexity(lr)))
    assert "complexity" in info.summary() and "24×24 → 96×96" in info.summary()


def test_outscale_resizes_the_native_result(cfg, butterfly):
    lr = crop(butterfly)
    half = with_overrides(cfg, {"outscale": 2, "color_fix": "none"})
    out, info = run_pipeline(lr, half, create_backend("bicubic", half))
    assert out.shape == (1, 3, 48, 48) and info.output_size == (48, 48)


def test_smart_chopping_reaches_the_backend(cfg, butterfly):
    lr = to_tensor(butterfly[:96, :96])
    counts = {}
    for smart in (False, True):
        c = with_overrides(cfg, {"realesrgan.tile_size": 48, "postprocess.smart_chopping": smart,
                                 "color_fix": "none"})
        seen = []
        out, info = run_pipeline(lr, c, create_backend("realesrgan", c), lambda d, t: seen.append(t))
        counts[smart] = (seen[-1], out)
    assert counts[True][0] != counts[False][0]  # a different grid (overlap 25-50 % instead of 32 px)
    assert (counts[True][1] - counts[False][1]).abs().mean() < 2 / 255


@pytest.mark.parametrize("stage,backend,words", [
    ("adaptive_scheduler", "realesrgan", "adaptive scheduler applies only to invsr, not realesrgan"),
    ("adaptive_guidance", "bicubic", "adaptive guidance applies only to invsr, not bicubic"),
    ("attention_fusion", "bicubic", "attention fusion applies only to invsr and realesrgan, not bicubic"),
])
def test_stages_that_do_not_apply_are_refused(cfg, stage, backend, words):
    with pytest.raises(ValueError, match=words):
        check_stages(with_overrides(cfg, {f"postprocess.{stage}": True}), backend)
    check_stages(with_overrides(cfg, {f"postprocess.{stage}": True}), "invsr")


def test_invalid_stage_settings_are_refused(cfg):
    bad = with_overrides(cfg, {"postprocess.min_overlap": 0.6, "postprocess.edge_enhancement": 1.5,
                               "postprocess.fusion_method": "mean"})
    with pytest.raises(ValueError) as err:
        check_stages(bad, "realesrgan")
    for words in ("min_overlap < max_overlap", "strength must be in [0, 1]", "weighted or max"):
        assert words in str(err.value)


def test_invsr_adaptive_scheduler_and_guidance(tiny_cfg):
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # noise: complexity ≈ 1
    c = with_overrides(tiny_cfg, {"postprocess.adaptive_scheduler": True, "postprocess.adaptive_guidance": True,
                                  "num_steps": 1})
    out, info = run_pipeline(lr, c, create_backend("invsr", c))
    assert info.timesteps == adaptive_timesteps(info.complexity, [200]) and len(info.timesteps) == 3
    assert "adaptive scheduler" in info.stages
    assert info.notes == ["adaptive guidance idle: cfg_scale ≤ 1 means no guidance to adapt"]
    # Equal to running the sampler with those timesteps directly.
    direct = with_overrides(tiny_cfg, {"timesteps": info.timesteps})
    expected, _ = run_pipeline(lr, direct, create_backend("invsr", direct))
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    guided = with_overrides(c, {"cfg_scale": 2.0})
    _, info = run_pipeline(lr, guided, create_backend("invsr", guided))
    assert any(s.startswith("guidance 2.") for s in info.stages) and not info.notes
