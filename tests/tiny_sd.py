"""Tiny random SD-Turbo-shaped weights for the InvSR tests, saved the way users' weights are.

``build_tiny_weights(root)`` writes a diffusers-layout folder (4-level VAE and UNet, tiny CLIP text
encoder with a hand-written BPE vocabulary, the real sd-turbo scheduler config) and a noise-predictor
state dict, then returns config overrides that point the sampler at them via the user-facing keys.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

# Facts of stabilityai/sd-turbo scheduler/scheduler_config.json.
SD_TURBO_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", timestep_spacing="trailing", steps_offset=1, interpolation_type="linear",
    use_karras_sigmas=False, timestep_type="discrete",
)
TINY_NP_PARAMS = dict(
    in_channels=3, down_block_types=["AttnDownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D"], block_out_channels=[8, 16], layers_per_block=[1, 1],
    act_fn="silu", latent_channels=4, norm_num_groups=4, sample_size=16, mid_block_add_attention=True,
    resnet_time_scale_shift="default", temb_channels=16, attention_head_dim=4, freq_shift=0,
    flip_sin_to_cos=True, double_z=True,
)


def _byte_chars() -> list[str]:
    """GPT-2/CLIP byte-to-unicode table: every byte gets a printable character."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def write_tokenizer_files(folder: Path) -> None:
    """A minimal CLIP BPE vocabulary: all single bytes (plain and word-final) plus a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    merges = [("p", "h"), ("o", "t"), ("ph", "ot"), ("o", "n</w>")]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")


def build_tiny_weights(root: Path) -> dict:
    """Write tiny weights under ``root``; returns the config overrides that select them."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from utils.noise_predictor import NoisePredictor

    sd_dir = root / "tiny-sd-turbo"
    torch.manual_seed(0)
    AutoencoderKL(
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        block_out_channels=[8, 8, 16, 16], layers_per_block=1, latent_channels=4, norm_num_groups=4,
        sample_size=64, scaling_factor=0.18215,
    ).save_pretrained(sd_dir / "vae")
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 8, 16, 16),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4, use_linear_projection=True,
    ).save_pretrained(sd_dir / "unet")
    write_tokenizer_files(sd_dir / "tokenizer")
    tokenizer = CLIPTokenizer(str(sd_dir / "tokenizer" / "vocab.json"), str(sd_dir / "tokenizer" / "merges.txt"),
                              model_max_length=77)
    tokenizer.save_pretrained(sd_dir / "tokenizer")
    CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, projection_dim=16, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )).save_pretrained(sd_dir / "text_encoder")
    EulerDiscreteScheduler(**SD_TURBO_SCHEDULER).save_pretrained(sd_dir / "scheduler")
    (sd_dir / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))

    ckpt = root / "tiny_noise_predictor.pth"
    torch.save(NoisePredictor(**TINY_NP_PARAMS).state_dict(), ckpt)
    return {
        "sd_pipe.params.pretrained_model_name_or_path": str(sd_dir),
        "model_start.ckpt_path": str(ckpt),
        "model_start.params": TINY_NP_PARAMS,
        "basesr.chopping.pch_size": 16,
        "color_fix": "none",
    }


# ---- pytest fixtures (import them into a test module to use them) ---------------------------------

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_overrides(tmp_path_factory) -> dict:
    # Tiny models run faster on one thread than on two contending ones; the sampler sets the thread
    # count from cpu_threads() when it is built, so pin that for the test session.
    import sampler_invsr

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sampler_invsr, "cpu_threads", lambda: 1)
        yield build_tiny_weights(tmp_path_factory.mktemp("invsr_weights"))


@pytest.fixture(scope="session")
def tiny_cfg(tiny_overrides):
    from utils.config import load_config, with_overrides

    return with_overrides(load_config(), tiny_overrides)
