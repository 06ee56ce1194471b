"""The training YAML (configs/train-*.yaml): loading it with command-line overrides and checking it."""
from __future__ import annotations

from numbers import Integral, Real
from pathlib import Path
from typing import Any, Mapping, Optional

from omegaconf import DictConfig

from utils.config import SCALE, ConfigError, check_timesteps, load_config, with_overrides

# Crops must give whole LR pixels, an even LR side (the predictor halves it) and whole latent pixels.
CROP_MULTIPLE = 32
MIXED_PRECISION = ("no", "bf16", "fp16")


def _positive_int(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and value > 0


def _non_negative(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and value >= 0


def training_config_problems(cfg: DictConfig) -> list[str]:
    """Every invalid value of a training config, one message each (empty when it can run)."""
    problems: list[str] = []

    def need(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    need(bool(cfg.save_dir), "save_dir is not set: pass --save_dir DIR (outside the repository: checkpoints are large)")
    try:
        check_timesteps(list(cfg.timesteps))
    except ConfigError as exc:
        problems.append(f"timesteps: {exc}")
    data, train, loss = cfg.data, cfg.train, cfg.loss
    need(bool(data.train_dirs) or data.synthetic is not None,
         "data.train_dirs is empty and data.synthetic is null: give folders of HR images")
    need(_positive_int(data.crop_size) and data.crop_size % CROP_MULTIPLE == 0,
         f"data.crop_size must be a positive multiple of {CROP_MULTIPLE} (got {data.crop_size!r})")
    need(cfg.degradation.scale == SCALE, f"degradation.scale must be {SCALE} (the sampler's scale)")
    need(_positive_int(data.micro_batch_size),
         f"data.micro_batch_size must be a positive integer (got {data.micro_batch_size!r})")
    for key in ("max_steps", "batch_size", "save_every"):
        need(_positive_int(train[key]), f"train.{key} must be a positive integer (got {train[key]!r})")
    need(_positive_int(train.warmup_steps) or train.warmup_steps == 0,
         f"train.warmup_steps must be an integer ≥ 0 (got {train.warmup_steps!r})")
    need(_non_negative(train.lr) and train.lr > 0, f"train.lr must be > 0 (got {train.lr!r})")
    need(_non_negative(train.ema_decay) and train.ema_decay < 1,
         f"train.ema_decay must be in [0, 1) (got {train.ema_decay!r})")
    need(train.keep_checkpoints is None or _positive_int(train.keep_checkpoints),
         f"train.keep_checkpoints must be null (keep all) or a positive integer (got {train.keep_checkpoints!r})")
    need(train.mixed_precision in MIXED_PRECISION,
         f"train.mixed_precision must be one of {', '.join(MIXED_PRECISION)} (got {train.mixed_precision!r})")
    for key in ("mse_weight", "lpips_weight", "adversarial_weight", "adversarial_start"):
        need(_non_negative(loss[key]), f"loss.{key} must be ≥ 0 (got {loss[key]!r})")
    val = cfg.validation
    if val.dir is not None:
        need(_positive_int(val.every), f"validation.every must be a positive integer (got {val.every!r})")
        need(_positive_int(val.crop_size) and val.crop_size % CROP_MULTIPLE == 0,
             f"validation.crop_size must be a positive multiple of {CROP_MULTIPLE} (got {val.crop_size!r})")
    return problems


def load_training_config(path: str | Path, overrides: Optional[Mapping[str, Any]] = None) -> DictConfig:
    """A read-only training config with dotted-key ``overrides``; ConfigError naming every problem."""
    cfg = with_overrides(load_config(path), overrides or {})
    problems = training_config_problems(cfg)
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def accumulation_steps(batch_size: int, micro_batch_size: int, num_processes: int) -> int:
    """Micro-batches per optimizer step so that micro × processes × steps = batch (exactly)."""
    per_step = micro_batch_size * num_processes
    if batch_size % per_step:
        raise ConfigError(f"train.batch_size {batch_size} is not a multiple of data.micro_batch_size "
                          f"{micro_batch_size} × {num_processes} process(es)")
    return batch_size // per_step
