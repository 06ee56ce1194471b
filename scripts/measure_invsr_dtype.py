"""InvSR per stage in float32 vs bfloat16 (channels-last) on the CPU, at SD-Turbo's full size.

The official weights cannot be had offline, but the cost of a forward pass does not depend on the
weight values: the models are built from SD-Turbo's architecture with random weights and placed by
``utils.backends.invsr.placement.place_models``, exactly as inference places the real ones. One
128×128 LR patch (512×512 out), one diffusion step, the runs of both dtypes interleaved so that each
ratio sees the same background load. Also reports how far bf16's patch is from float32's.

    .venv/bin/python scripts/measure_invsr_dtype.py --repeats 2
"""
from __future__ import annotations

import argparse
import copy
import os
import time

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from utils.backends.invsr.models import InvSRModels  # noqa: E402
from utils.backends.invsr.placement import place_models  # noqa: E402
from utils.backends.invsr.sampling import POSITIVE_PROMPT, sample_patches, upsample_lr  # noqa: E402
from utils.backends.invsr.noise_predictor import NoisePredictor  # noqa: E402
from utils.config import load_config, with_overrides  # noqa: E402
from utils.devices import cpu_has_fast_bf16, set_threads  # noqa: E402
from utils.settings import RunSettings  # noqa: E402
from utils.training.tiny_sd import (  # noqa: E402
    SD_TURBO_SCHEDULER, SD_TURBO_TEXT as TEXT, SD_TURBO_UNET as UNET, SD_TURBO_VAE as VAE)

PATCH = 128


def build(dtype: torch.dtype, seed: int = 0) -> InvSRModels:
    torch.manual_seed(seed)
    cfg = load_config()
    vae, unet = AutoencoderKL(**VAE), UNet2DConditionModel(**UNET)
    text = CLIPTextModel(CLIPTextConfig(**TEXT))
    predictor = NoisePredictor(**cfg.model_start.params)
    place_models(vae, unet, text, predictor, torch.device("cpu"), dtype)
    models = InvSRModels(vae, unet, text, None, dict(SD_TURBO_SCHEDULER), predictor, torch.device("cpu"), dtype)
    with torch.inference_mode():
        models._prompts[POSITIVE_PROMPT] = text(torch.arange(77)[None])[0].to(dtype)
    return models


def converted(models: InvSRModels, dtype: torch.dtype) -> InvSRModels:
    """The same weights in ``dtype``, placed as inference places them."""
    parts = [copy.deepcopy(m) for m in (models.vae, models.unet, models.text_encoder, models.noise_predictor)]
    place_models(*parts, models.device, dtype)
    vae, unet, text, predictor = parts
    out = InvSRModels(vae, unet, text, None, models.scheduler_config, predictor, models.device, dtype)
    out._prompts = {k: v.to(dtype) for k, v in models._prompts.items()}
    return out


def stages(m: InvSRModels, lr: torch.Tensor, settings: RunSettings) -> dict:
    """name -> zero-argument call of each stage on one patch, and the whole patch."""
    up = upsample_lr(lr.to(m.dtype))  # as sample_patches feeds the VAE
    latent = torch.randn(1, 4, PATCH // 2, PATCH // 2).to(m.dtype)
    embeds = m._prompts[POSITIVE_PROMPT]
    t = torch.tensor([199])
    return {
        "text encoder": lambda: m.text_encoder(torch.arange(77)[None]),
        "VAE encode": lambda: m.vae.encode(up).latent_dist.mean,
        "noise predictor": lambda: m.noise_predictor(lr.to(m.noise_predictor.dtype), t,
                                                     torch.randn(1, 4, PATCH // 2, PATCH // 2).to(m.dtype)),
        "UNet step": lambda: m.unet(latent, t, encoder_hidden_states=embeds).sample,
        "VAE decode": lambda: m.vae.decode(latent).sample,
        "whole patch (1 step)": lambda: sample_patches(m, lr, settings, [torch.Generator().manual_seed(1)],
                                                       [torch.Generator().manual_seed(2)]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    threads = set_threads()
    settings = RunSettings.from_config(with_overrides(load_config(), {"num_steps": 1}), "invsr")
    lr = torch.rand(1, 3, PATCH, PATCH, generator=torch.Generator().manual_seed(0))
    fp32 = build(torch.float32)
    bf16 = converted(fp32, torch.bfloat16)
    runs = {"float32": stages(fp32, lr, settings), "bfloat16": stages(bf16, lr, settings)}
    times: dict[tuple[str, str], list[float]] = {}
    outputs = {}
    with torch.inference_mode():
        for dtype, calls in runs.items():  # warm-up: oneDNN picks its kernels on the first call
            calls["UNet step"]()
        for _ in range(args.repeats):
            for name in runs["float32"]:
                for dtype, calls in runs.items():
                    start = time.perf_counter()
                    out = calls[name]()
                    times.setdefault((name, dtype), []).append(time.perf_counter() - start)
                    if name.startswith("whole"):
                        outputs[dtype] = out.float()
    print(f"{threads} threads, fast (AMX) bf16: {cpu_has_fast_bf16()}, {args.repeats} interleaved repeats, "
          f"best of each")
    print("| stage | float32 s | bfloat16 s | bf16 / fp32 |\n|---|---|---|---|")
    for name in runs["float32"]:
        a, b = min(times[name, "float32"]), min(times[name, "bfloat16"])
        print(f"| {name} | {a:.2f} | {b:.2f} | {b / a:.2f}× |")
    diff = outputs["bfloat16"] - outputs["float32"]
    rel = float(diff.norm() / outputs["float32"].norm())
    psnr = float(10 * torch.log10(1 / diff.pow(2).mean()))
    print(f"whole patch, bf16 vs float32 output (random weights): relative L2 {rel:.2e}, PSNR {psnr:.1f} dB")


if __name__ == "__main__":
    main()
