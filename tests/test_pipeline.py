"""The post-processing chain as the CLI, app and API run it (utils.pipeline.chain.run_pipeline)."""
import pytest
import torch

from color_fix_by_hand import fixed_by_hand, hard_edges
from tiny_sd import tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)
from utils.postprocess.adaptive_scheduler import adaptive_timesteps
from utils.backends import load_backend
from utils.postprocess.color_fix import color_fix
from utils.postprocess.complexity import image_complexity
from utils.config import ConfigError, with_overrides
from utils.settings import config_problems
from utils.postprocess.enhancement import enhance_edges
from utils.postprocess.fusion import fuse
from utils.pipeline.chain import bicubic_reference, run_pipeline, to_tensor
from utils.settings import RunSettings


def run(lr, cfg, name, progress=None):
    """The pipeline as users run it: loaded backend, settings from the config."""
    return run_pipeline(lr, load_backend(name, cfg), RunSettings.from_config(cfg, name), progress)


def crop(butterfly, size=24):
    return to_tensor(butterfly[100:100 + size, 60:60 + size])


def test_chain_order_and_values_match_the_stages_run_by_hand(cfg, butterfly):
    lr = crop(butterfly)
    base = with_overrides(cfg, {"color_fix": "none"})
    plain, _ = run(lr, base, "realesrgan")
    full = with_overrides(cfg, {"color_fix": "ycbcr", "postprocess.attention_fusion": True,
                                "postprocess.fusion_method": "weighted", "postprocess.edge_enhancement": 0.4})
    out, info = run(lr, full, "realesrgan")
    ref = bicubic_reference(lr, (96, 96))
    expected = enhance_edges(fuse([color_fix(plain, ref, "ycbcr"), ref.clamp(0, 1)], "weighted"), 0.4)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert info.stages == ["fusion weighted", "edges 0.40"] and info.color_fix == "ycbcr"
    # Complexity feeds only InvSR's adaptive stages: not computed (nor shown) for the others.
    assert info.complexity is None and "complexity" not in info.summary() and "24×24 → 96×96" in info.summary()


def test_outscale_resizes_the_native_result(cfg, butterfly):
    lr = crop(butterfly)
    half = with_overrides(cfg, {"outscale": 2, "color_fix": "none"})
    out, info = run(lr, half, "bicubic")
    assert out.shape == (1, 3, 48, 48) and info.output_size == (48, 48)


def test_smart_chopping_reaches_the_backend(cfg, butterfly):
    lr = to_tensor(butterfly[:96, :96])
    counts = {}
    for smart in (False, True):
        # No context margin, and smart overlaps of half a tile: the smart grid needs more tiles.
        c = with_overrides(cfg, {"realesrgan.tile_size": 48, "realesrgan.tile_margin": 0,
                                 "postprocess.smart_chopping": smart, "postprocess.min_overlap": 0.5,
                                 "postprocess.max_overlap": 0.55, "color_fix": "none"})
        seen = []
        out, info = run(lr, c, "realesrgan", lambda d, t: seen.append(t))
        counts[smart] = (seen[-1], out)
    assert (counts[False][0], counts[True][0]) == (4, 9)  # 2×2 tiles of 52 px, or 3×3 overlapping by half
    assert (counts[True][1] - counts[False][1]).abs().mean() < 2 / 255


@pytest.mark.parametrize("stage,backend,words", [
    ("adaptive_scheduler", "realesrgan", "adaptive scheduler applies only to invsr, not realesrgan"),
    ("adaptive_guidance", "bicubic", "adaptive guidance applies only to invsr, not bicubic"),
    ("attention_fusion", "bicubic", "attention fusion applies only to invsr, realesrgan, span, realesrgan-anime, waifu2x and custom, not bicubic"),
])
def test_stages_that_do_not_apply_are_refused(cfg, stage, backend, words):
    with pytest.raises(ConfigError, match=words):
        RunSettings.from_config(with_overrides(cfg, {f"postprocess.{stage}": True}), backend)
    assert not config_problems(with_overrides(cfg, {f"postprocess.{stage}": True}), "invsr")


def test_invalid_stage_settings_are_refused(cfg):
    bad = with_overrides(cfg, {"postprocess.min_overlap": 0.6, "postprocess.edge_enhancement": 1.5,
                               "postprocess.fusion_method": "mean"})
    with pytest.raises(ConfigError) as err:
        RunSettings.from_config(bad, "realesrgan")
    for words in ("min_overlap < max_overlap", "strength) must be in [0, 1]", "fusion_method must be one of weighted, max"):
        assert words in str(err.value)


def test_invsr_adaptive_scheduler_and_guidance(tiny_cfg):
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))  # noise: complexity ≈ 1
    c = with_overrides(tiny_cfg, {"postprocess.adaptive_scheduler": True, "postprocess.adaptive_guidance": True,
                                  "num_steps": 1})
    out, info = run(lr, c, "invsr")
    assert info.complexity == pytest.approx(float(image_complexity(lr)))
    assert info.timesteps == adaptive_timesteps(info.complexity, [200]) and len(info.timesteps) == 3
    assert "adaptive scheduler" in info.stages
    assert info.notes == ["adaptive guidance idle: cfg_scale ≤ 1 means no guidance to adapt"]
    # Equal to running the sampler with those timesteps directly.
    direct = with_overrides(tiny_cfg, {"timesteps": info.timesteps})
    expected, _ = run(lr, direct, "invsr")
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    guided = with_overrides(c, {"cfg_scale": 2.0})
    _, info = run(lr, guided, "invsr")
    assert any(s.startswith("guidance 2.") for s in info.stages) and not info.notes


def test_invsr_through_the_user_pipeline_with_a_colour_fix(tiny_cfg):
    """The loaded InvSR backend, the settings and the wavelet fix, as the CLI and the app run them."""
    lr = torch.rand(1, 3, 20, 16, generator=torch.Generator().manual_seed(3))
    c = with_overrides(tiny_cfg, {"color_fix": "wavelet", "outscale": 2})
    out, info = run(lr, c, "invsr")
    raw = load_backend("invsr", c).upscale(lr, RunSettings.from_config(c, "invsr"))
    expected = torch.nn.functional.interpolate(fixed_by_hand(raw, lr, "wavelet").float(), (40, 32), mode="bicubic",
                                               align_corners=False, antialias=True).clamp(0, 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert info.backend == "invsr" and info.color_fix == "wavelet" and info.timesteps == [200]
    assert (out - torch.nn.functional.interpolate(raw, (40, 32), mode="bicubic", align_corners=False,
                                                  antialias=True)).abs().max() > 1e-3  # the fix did something


@pytest.mark.parametrize("method", ["ycbcr", "wavelet"])
def test_colour_fix_of_every_backend_equals_the_documented_steps(cfg, method):
    """The chain fixes any backend's result against the unclamped reference and clamps after."""
    lr = hard_edges(20, 24)
    raw, _ = run(lr, with_overrides(cfg, {"color_fix": "none"}), "bicubic")
    out, _ = run(lr, with_overrides(cfg, {"color_fix": method}), "bicubic")
    expected = fixed_by_hand(raw, lr, method)
    assert (expected - raw).abs().max() > 5e-3  # the fix changes the result
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=0)


def test_limits_check_the_native_result_and_its_memory_before_any_work(cfg, butterfly):
    from utils.pipeline.limits import LimitError

    lr = crop(butterfly, 32)  # ×4 native: 128×128 = 16,384 px
    calls = []
    small = with_overrides(cfg, {"limits.max_output_pixels": 16_000, "outscale": 1})  # final 32² fits, native not
    with pytest.raises(LimitError, match="×4 result would be 128×128 = 16,384 pixels"):
        run(lr, small, "bicubic", lambda d, t: calls.append(d))
    tight = with_overrides(cfg, {"limits.max_memory_mb": 1, "outscale": 1})  # less than any image needs
    with pytest.raises(LimitError, match=r"a 32×32 input needs about [\d,]+ MB at ×4, over the limit of 1 MB"):
        run(lr, tight, "bicubic", lambda d, t: calls.append(d))
    assert calls == []  # refused before the backend ran a single patch
    assert run(lr, with_overrides(cfg, {"outscale": 1}), "bicubic")[0].shape == (1, 3, 32, 32)
