"""InvSR sampler on tiny random SD-Turbo-shaped weights (loaded through the user-facing --sd_path keys)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from color_fix_by_hand import color_reference, fixed_by_hand, hard_edges
from tiny_sd import SD_TURBO_SCHEDULER, TINY_NP_PARAMS, tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)

from sampler_invsr import InvSamplerSR
from utils.config import with_overrides
from utils.settings import RunSettings

SEED = 12345


def sampler(cfg, **overrides) -> InvSamplerSR:
    return InvSamplerSR(with_overrides(cfg, overrides))


def upscale(s: InvSamplerSR, lr: torch.Tensor, progress=None) -> torch.Tensor:
    """The backend's raw result with the sampler's settings (no colour fix)."""
    return s.backend.upscale(lr, s.settings, progress)


def lr_image(h: int, w: int, b: int = 1, seed: int = 0) -> torch.Tensor:
    # Smooth content plus texture, like a real low-resolution photo.
    g = torch.Generator().manual_seed(seed)
    base = F.interpolate(torch.rand(b, 3, 4, 4, generator=g), size=(h, w), mode="bilinear", align_corners=False)
    return (0.8 * base + 0.2 * torch.rand(b, 3, h, w, generator=g)).clamp(0, 1)


def training_sigmas() -> torch.Tensor:
    """σ_k = sqrt((1 − ᾱ_k)/ᾱ_k) for sd-turbo's scaled_linear betas, in float32."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float32) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def test_sigma_table_and_scheduler_indexing():
    from diffusers import EulerDiscreteScheduler

    sig = training_sigmas()
    assert sig[199].item() == pytest.approx(0.5692854, abs=1e-6)
    assert sig[99].item() == pytest.approx(0.3416744, abs=1e-6)
    assert sig[49].item() == pytest.approx(0.2230038, abs=1e-6)
    sched = EulerDiscreteScheduler(**SD_TURBO_SCHEDULER)
    sched.set_timesteps(timesteps=[199, 99, 49])
    torch.testing.assert_close(sched.sigmas, torch.tensor([sig[199], sig[99], sig[49], 0.0]), rtol=0, atol=1e-7)


@pytest.mark.parametrize("timesteps", [[200], [200, 100]])
def test_one_patch_equals_plain_recomputation(tiny_cfg, tiny_overrides, timesteps):
    """Encode, add predicted noise, Euler steps, decode — written out with the σ formula."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from utils.backends.invsr.noise_predictor import NoisePredictor

    sd = tiny_overrides["sd_pipe.params.pretrained_model_name_or_path"]
    vae = AutoencoderKL.from_pretrained(sd, subfolder="vae").eval()
    unet = UNet2DConditionModel.from_pretrained(sd, subfolder="unet").eval()
    text_encoder = CLIPTextModel.from_pretrained(sd, subfolder="text_encoder").eval()
    tokenizer = CLIPTokenizer.from_pretrained(sd, subfolder="tokenizer")
    predictor = NoisePredictor(**TINY_NP_PARAMS).eval()
    predictor.load_state_dict(torch.load(tiny_overrides["model_start.ckpt_path"]))

    lr = lr_image(16, 16)
    sig = training_sigmas()
    sigmas = [sig[t - 1] for t in timesteps] + [torch.tensor(0.0)]
    prompt = ("Cinematic, high-contrast, photo-realistic, 8k, ultra HD, meticulous detailing, "
              "hyper sharpness, perfect without deformations")
    with torch.no_grad():
        ids = tokenizer(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        embeds = text_encoder(ids)[0]
        up = F.interpolate(lr, size=(64, 64), mode="bicubic", align_corners=False) * 2 - 1
        post = vae.encode(up).latent_dist
        eps_vae = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED))
        z0 = (post.mean + post.std * eps_vae) * 0.18215
        mean, logvar = predictor.encoder(lr * 2 - 1, torch.tensor([timesteps[0] - 1.0])).chunk(2, dim=1)
        eps_np = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(SEED + 1))
        x = z0 + sigmas[0] * (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps_np)
        for i, t in enumerate(timesteps):
            eps = unet(x / (sigmas[i] ** 2 + 1) ** 0.5, torch.tensor(t - 1.0), encoder_hidden_states=embeds).sample
            x = x + (sigmas[i + 1] - sigmas[i]) * eps
        expected = (vae.decode(x / 0.18215).sample / 2 + 0.5).clamp(0, 1)

    got = sampler(tiny_cfg, timesteps=timesteps, seed=SEED).sample_func(lr)
    assert got.shape == (1, 64, 64, 3) and got.dtype == np.float32
    assert 0.05 < got.std() and 0.01 < got.mean() < 0.99  # not saturated: the comparison is meaningful
    np.testing.assert_allclose(got, expected.permute(0, 2, 3, 1).numpy(), rtol=0, atol=1e-5)


def test_multi_patch_mod_padding_and_batching(tiny_cfg):
    lr = lr_image(40, 24)  # 40×24 -> reflect-padded to 48×32 (mod 16) -> 5×3 patches of 16, stride 8
    s = sampler(tiny_cfg)
    calls = []
    out = upscale(s, lr, progress=lambda done, total: calls.append((done, total)))
    assert out.shape == (1, 3, 160, 96) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1
    assert calls == [(i, 15) for i in range(1, 16)]
    # The padding is bottom/right reflection: running on the padded image and cropping is identical.
    padded = F.pad(lr, (0, 8, 0, 8), mode="reflect")
    torch.testing.assert_close(out, upscale(s, padded)[:, :, :160, :96], rtol=0, atol=1e-6)
    # Batching patches does not change the result.
    batched = sampler(tiny_cfg, **{"basesr.chopping.extra_bs": 4})
    torch.testing.assert_close(out, upscale(batched, lr), rtol=0, atol=1e-5)


@pytest.mark.parametrize("h, w, offset", [(10, 12, (3, 2)), (5, 16, (5, 0))])
def test_image_smaller_than_patch(tiny_cfg, h, w, offset):
    """Reflect-pad to the patch (repeatedly for 5 px), run once, crop at 4× the accumulated offsets."""
    lr = lr_image(h, w, seed=3)
    s = sampler(tiny_cfg)
    out = upscale(s, lr)
    assert out.shape == (1, 3, 4 * h, 4 * w)
    padded = lr
    while padded.shape[-2] < 16 or padded.shape[-1] < 16:
        ph, pw = padded.shape[-2:]
        top, left = min(max((16 - ph) // 2, 0), ph - 1), min(max((16 - pw) // 2, 0), pw - 1)
        bottom, right = min(max(16 - ph - top, 0), ph - 1), min(max(16 - pw - left, 0), pw - 1)
        padded = F.pad(padded, (left, right, top, bottom), mode="reflect")
    assert padded.shape[-2:] == (16, 16)
    top, left = offset
    whole = upscale(s, padded)
    torch.testing.assert_close(out, whole[:, :, 4 * top:4 * (top + h), 4 * left:4 * (left + w)], rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3, 5])
def test_step_counts(tiny_cfg, steps):
    from utils.config import DEFAULT_TIMESTEPS

    s = sampler(tiny_cfg, num_steps=steps)
    assert s.settings.timesteps == tuple(DEFAULT_TIMESTEPS[steps])
    out = s.sample_func(lr_image(16, 16))
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()
    if steps > 1:
        assert np.abs(out - sampler(tiny_cfg, num_steps=1).sample_func(lr_image(16, 16))).max() > 1e-3


@pytest.mark.parametrize("method", ["ycbcr", "wavelet"])
def test_color_fix_equals_the_documented_steps(tiny_cfg, method):
    """Against the unclamped antialiased bicubic of the unpadded input, clamped after (written out in
    color_fix_by_hand), on hard edges where bicubic overshoots [0, 1]."""
    lr = hard_edges(12, 20)  # padded internally (12 < the 16-px patch): the reference is still the plain input
    assert color_reference(lr, (48, 80)).min() < -0.05 and color_reference(lr, (48, 80)).max() > 1.05
    raw = torch.from_numpy(sampler(tiny_cfg).sample_func(lr)).permute(0, 3, 1, 2)
    expected = fixed_by_hand(raw, lr, method).permute(0, 2, 3, 1).numpy()
    got = sampler(tiny_cfg, color_fix=method).sample_func(lr)
    assert np.abs(expected - raw.permute(0, 2, 3, 1).numpy()).max() > 0.05  # the fix changes the result
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("method", ["histogram", "hybrid"])
def test_other_color_fixes_use_the_unclamped_unpadded_reference(tiny_cfg, method):
    from utils.postprocess.color_fix import color_fix

    lr = hard_edges(10, 12)
    plain = upscale(sampler(tiny_cfg), lr)
    fixed = torch.from_numpy(sampler(tiny_cfg, color_fix=method).sample_func(lr)).permute(0, 3, 1, 2)
    reference = F.interpolate(lr, size=(40, 48), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(fixed, color_fix(plain, reference, method), rtol=0, atol=1e-6)


def test_determinism_and_batch_of_images(tiny_cfg):
    lr = lr_image(16, 24, b=2, seed=7)
    a = sampler(tiny_cfg).sample_func(lr)
    b = sampler(tiny_cfg).sample_func(lr)
    np.testing.assert_array_equal(a, b)
    c = sampler(tiny_cfg, seed=SEED + 10).sample_func(lr)
    assert np.abs(a - c).max() > 1e-3
    assert a.shape == (2, 64, 96, 3)
    # Each image of a batch gets the noise it would get alone.
    np.testing.assert_allclose(a[1:], sampler(tiny_cfg).sample_func(lr[1:]), rtol=0, atol=1e-5)


def test_config_is_not_mutated(tiny_cfg):
    from omegaconf import OmegaConf

    before = OmegaConf.to_yaml(tiny_cfg)
    s = InvSamplerSR(tiny_cfg)
    s.sample_func(lr_image(16, 16))
    assert OmegaConf.to_yaml(tiny_cfg) == before and s.configs is tiny_cfg


@pytest.mark.parametrize("overrides, words", [
    ({"basesr.sf": 2}, "basesr.sf"),
    ({"basesr.chopping.pch_size": -16}, "pch_size"),
    ({"basesr.chopping.pch_size": 12}, "multiple of 8"),
    ({"basesr.chopping.extra_bs": 0}, "extra_bs"),
    ({"latent_tiled_size": -1}, "latent_tiled_size"),
    ({"timesteps": [100, 200]}, "descending"),
    ({"timesteps": [200, 200]}, "descending"),
    ({"timesteps": [0]}, "1..999"),
    ({"timesteps": [1000]}, "1..999"),
    ({"timesteps": [200.5]}, "integer"),
    ({"timesteps": []}, "give 1 to 5 timesteps, got 0"),
    ({"num_steps": 6}, "num_steps"),
    ({"num_steps": 0}, "num_steps"),
    ({"cfg_scale": -1.0}, "cfg_scale"),
    ({"color_fix": "sepia"}, "color_fix"),
])
def test_config_errors(tiny_cfg, overrides, words):
    with pytest.raises(ValueError, match=words):
        InvSamplerSR(with_overrides(tiny_cfg, overrides))


@pytest.mark.parametrize("bad, words", [
    (torch.rand(1, 1, 16, 16), "RGB"),
    (torch.rand(1, 4, 16, 16), "RGB"),
    (torch.rand(3, 16, 16), "RGB"),
    (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "float"),
    (torch.rand(1, 3, 1, 16), "too small"),
    (np.zeros((1, 3, 16, 16), np.float32), "tensor"),
])
def test_input_errors(tiny_cfg, bad, words):
    with pytest.raises(ValueError, match=words):
        InvSamplerSR(tiny_cfg).sample_func(bad)


def test_inference_file_and_folder(tiny_cfg, tmp_path):
    from datapipe.image_io import LoadedImage, read_image, write_image

    src = tmp_path / "in"
    src.mkdir()
    for name, (h, w) in {"a": (16, 16), "b": (16, 16), "c": (12, 20)}.items():
        write_image(src / f"{name}.png", LoadedImage(rgb=lr_image(h, w, seed=len(name)).permute(0, 2, 3, 1)[0].numpy()))
    write_image(src / "a.jpg", LoadedImage(rgb=lr_image(16, 16, seed=9).permute(0, 2, 3, 1)[0].numpy()))
    s = sampler(tiny_cfg)
    written = s.inference(src, tmp_path / "out", bs=2)
    # a.png and a.jpg do not collide: they keep their extension in the output name.
    assert sorted(p.name for p in written) == ["a_jpg.png", "a_png.png", "b.png", "c.png"]
    assert read_image(tmp_path / "out" / "c.png").rgb.shape == (48, 80, 3)
    single = s.inference(src / "b.png", tmp_path / "out1")
    # Batched and single runs differ only by float rounding, i.e. at most one 8-bit level.
    np.testing.assert_allclose(read_image(single[0]).rgb, read_image(tmp_path / "out" / "b.png").rgb,
                               rtol=0, atol=1.01 / 255)
    # The same batch layer as the CLI: a rerun skips finished files, a bad file is named, not fatal.
    finished = (tmp_path / "out" / "c.png").stat().st_mtime_ns
    (src / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png: not a readable image"):
        s.inference(src, tmp_path / "out", bs=2)
    assert (tmp_path / "out" / "c.png").stat().st_mtime_ns == finished


def test_backend(tiny_cfg):
    from utils.backends.invsr.backend import InvSRBackend

    cfg = with_overrides(tiny_cfg, {"color_fix": "wavelet"})  # the backend must ignore it
    assert InvSRBackend.availability(cfg).ok
    backend = InvSRBackend(cfg)
    assert backend.device == "cpu"
    lr = lr_image(20, 16, seed=9)
    calls = []
    out = backend.upscale(lr, RunSettings.from_config(cfg, "invsr"), progress=lambda d, t: calls.append((d, t)))
    assert out.shape == (1, 3, 80, 64) and out.dtype == torch.float32
    assert calls[-1][0] == calls[-1][1] > 1
    torch.testing.assert_close(out, upscale(sampler(tiny_cfg), lr), rtol=0, atol=0)


def test_bfloat16_models_stay_close_to_float32_and_run_channels_last(tiny_cfg):
    """torch bf16 (the default on CPUs with AMX): every model, the predictor included, is bf16 and the
    convolutional ones are channels-last; the result stays within 0.02 (mean abs) of float32's, which
    on these tiny random models is ~1 % of the output's own spread."""
    lr = lr_image(16, 16, seed=5)
    fp32, bf16 = sampler(tiny_cfg), sampler(tiny_cfg, precision="bfloat16")
    m = bf16.backend.models
    assert {p.dtype for mod in (m.vae, m.unet, m.text_encoder, m.noise_predictor) for p in mod.parameters()} == \
        {torch.bfloat16}
    for mod in (m.vae, m.unet, m.noise_predictor):
        conv = next(c for c in mod.modules() if isinstance(c, torch.nn.Conv2d) and c.kernel_size != (1, 1))
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert bf16.backend.identity["precision"] == "bfloat16" and fp32.backend.identity["precision"] == "float32"
    ref, got = upscale(fp32, lr), upscale(bf16, lr)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    assert ref.std() > 0.05 and (got - ref).abs().mean() < 0.02
    assert (got - ref).abs().max() > 0  # bf16 really ran: float32 would reproduce the reference


def test_auto_runtime_follows_the_cpu(tiny_cfg, monkeypatch):
    from utils import devices
    from utils.backends.invsr.precision import runtime_choice
    from utils.runtimes import ov_core
    from utils.runtimes.policy import Choice

    auto = with_overrides(tiny_cfg, {"runtime": "auto", "precision": "auto"})
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cpu"))
    monkeypatch.setattr(ov_core, "capabilities", lambda: ("BF16", "FP32"))
    assert runtime_choice(auto) == Choice("openvino", "bfloat16", "cpu")
    monkeypatch.setattr(ov_core, "capabilities", lambda: ("FP32",))
    assert runtime_choice(auto) == Choice("openvino", "float32", "cpu")
    monkeypatch.setattr(devices, "pick_device", lambda prefer=None: torch.device("cuda"))
    assert runtime_choice(auto) == Choice("torch", "float16", "cuda")


def relative_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.double() - ref.double()).norm() / ref.double().norm())


@pytest.mark.parametrize("precision,limit", [("float32", 1e-4), ("bfloat16", 3e-2)])
def test_openvino_equals_torch_float32(tiny_cfg, precision, limit):
    """VAE encoder, decoder, UNet and noise predictor converted to OpenVINO: the whole sampler (two
    steps, a batch of two and patches blended) against torch float32 on the same weights."""
    from utils.runtimes import ov_core

    if precision == "bfloat16" and "BF16" not in ov_core.capabilities():
        pytest.skip("this CPU's OpenVINO plugin does not list BF16")
    lr = lr_image(24, 20, b=2, seed=3)
    torch_fp32 = sampler(tiny_cfg, timesteps=[250, 100])  # not the conversion example's timestep
    ov = sampler(tiny_cfg, timesteps=[250, 100], runtime="openvino", precision=precision)
    assert ov.backend.identity["runtime"] == "openvino" and ov.backend.identity["precision"] == precision
    ref, got = upscale(torch_fp32, lr), upscale(ov, lr)
    assert got.shape == ref.shape == (2, 3, 96, 80) and got.dtype == torch.float32
    error = relative_l2(got, ref)
    assert error < limit
    if precision == "bfloat16":
        assert error > 1e-4  # bf16 really ran
