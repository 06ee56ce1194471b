"""Where checkpoints live and what they hold.

    <save_dir>/checkpoints/step_0005000/
        noise_predictor.pth   EMA weights as a plain state dict (the keys of the released
                              noise_predictor_sd_turbo_v5.pth): pass it to --started_ckpt_path
        training_state/       accelerate's save_state: predictor, discriminator, optimizers,
                              LR schedulers, EMA, step and every process's RNG states

``noise_predictor.pth`` is written after ``training_state/``, so a folder holding it is complete.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Mapping, Optional

import torch

CHECKPOINTS = "checkpoints"
INFERENCE_WEIGHTS = "noise_predictor.pth"
TRAINING_STATE = "training_state"
_STEP_DIR = re.compile(r"step_(\d+)")


def checkpoint_dir(save_dir: Path, step: int) -> Path:
    return Path(save_dir) / CHECKPOINTS / f"step_{step:07d}"


def complete_checkpoints(save_dir: Path) -> list[Path]:
    """Complete checkpoint folders under ``save_dir``, oldest first."""
    root = Path(save_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), d) for d in root.iterdir() if (m := _STEP_DIR.fullmatch(d.name))
             and (d / INFERENCE_WEIGHTS).is_file() and (d / TRAINING_STATE).is_dir()]
    return [d for _, d in sorted(found)]


def resolve_resume(path: Path) -> Path:
    """A checkpoint folder, given it or a save dir (then its latest complete checkpoint)."""
    path = Path(path)
    if (path / TRAINING_STATE).is_dir():
        return path
    found = complete_checkpoints(path)
    if not found:
        raise FileNotFoundError(f"--resume {path}: neither a checkpoint folder (with {TRAINING_STATE}/) nor a "
                                f"save dir with complete checkpoints under {CHECKPOINTS}/")
    return found[-1]


def write_inference_weights(path: Path, state: Mapping[str, torch.Tensor]) -> Path:
    """Save a predictor state dict as the sampler loads it: CPU, contiguous tensors, no wrapper."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # per process: never two writers on one temp file
    torch.save({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return path


def prune_checkpoints(save_dir: Path, keep: Optional[int]) -> list[Path]:
    """Delete all but the ``keep`` (≥ 1) newest complete checkpoints (None keeps all); returns the deleted."""
    if keep is None:
        return []
    if keep < 1:
        raise ValueError(f"keep at least one checkpoint (got {keep})")
    old = complete_checkpoints(save_dir)[:-keep]
    for d in old:
        shutil.rmtree(d)
    return old
