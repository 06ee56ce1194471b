"""Tiny random SD-Turbo-shaped weights, saved the way users' weights are: for smoke-training runs
(configs/train-tiny.yaml) and the tests.

:func:`build_tiny_sd` writes a diffusers-layout folder (4-level VAE and UNet, tiny CLIP text encoder
with a hand-written BPE vocabulary, the real sd-turbo scheduler config); :func:`build_tiny_weights`
adds a tiny noise-predictor state dict and returns config overrides that point the sampler at both
via the user-facing keys. Building is deterministic (global torch seed 0, which it resets).
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
TINY_SD_DIRNAME = "tiny-sd-turbo"
# stabilityai/sd-turbo's unet, vae and text_encoder configs (the SD 2.1 base architecture): for timing
# with random weights, since a forward pass costs the same whatever the weight values.
SD_TURBO_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                     block_out_channels=(320, 640, 1280, 1280),
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
                     attention_head_dim=(5, 10, 20, 20), cross_attention_dim=1024, use_linear_projection=True)
SD_TURBO_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, sample_size=768,
                    block_out_channels=(128, 256, 512, 512),
                    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
SD_TURBO_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=23,
                     projection_dim=512, hidden_act="gelu", max_position_embeddings=77, vocab_size=49408)


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


def build_tiny_sd(sd_dir: Path) -> Path:
    """Write a tiny random SD-Turbo (VAE factor 8, 4 latent channels) into ``sd_dir``; returns it."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sd_dir = Path(sd_dir)
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
    return sd_dir


def build_random_sd_turbo(sd_dir: Path) -> Path:
    """Write SD-Turbo's full architecture with random weights into ``sd_dir`` (diffusers layout, the
    tiny tokenizer); returns it. For measuring speed through the user-facing --sd_path."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    sd_dir = Path(sd_dir)
    torch.manual_seed(0)
    AutoencoderKL(**SD_TURBO_VAE).save_pretrained(sd_dir / "vae")
    UNet2DConditionModel(**SD_TURBO_UNET).save_pretrained(sd_dir / "unet")
    write_tokenizer_files(sd_dir / "tokenizer")
    CLIPTokenizer(str(sd_dir / "tokenizer" / "vocab.json"), str(sd_dir / "tokenizer" / "merges.txt"),
                  model_max_length=77).save_pretrained(sd_dir / "tokenizer")
    CLIPTextModel(CLIPTextConfig(**SD_TURBO_TEXT)).save_pretrained(sd_dir / "text_encoder")
    EulerDiscreteScheduler(**SD_TURBO_SCHEDULER).save_pretrained(sd_dir / "scheduler")
    (sd_dir / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return sd_dir


def build_tiny_weights(root: Path) -> dict:
    """Write a tiny SD-Turbo and a tiny noise predictor under ``root``; returns the config overrides
    that select them."""
    from utils.backends.invsr.noise_predictor import NoisePredictor

    sd_dir = build_tiny_sd(root / TINY_SD_DIRNAME)
    ckpt = root / "tiny_noise_predictor.pth"
    torch.save(NoisePredictor(**TINY_NP_PARAMS).state_dict(), ckpt)
    return {
        "sd_pipe.params.pretrained_model_name_or_path": str(sd_dir),
        "model_start.ckpt_path": str(ckpt),
        "model_start.params": TINY_NP_PARAMS,
        "basesr.chopping.pch_size": 16,
        "color_fix": "none",
    }
