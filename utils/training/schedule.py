"""Optimizers and the learning-rate schedule: AdamW with a linear warm-up, then constant."""
from __future__ import annotations

from typing import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")  # where torch has a fused AdamW kernel


class LinearWarmup:
    """LR factor of optimizer step s (0-based): (s + 1) / warmup_steps up to 1, then 1.

    A class rather than a lambda so that LambdaLR's state dict (and a resumed run) keeps it.
    """

    def __init__(self, warmup_steps: int):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be ≥ 0 (got {warmup_steps})")
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: int) -> float:
        if self.warmup_steps == 0:
            return 1.0
        return min(1.0, (step + 1) / self.warmup_steps)


def adamw_with_warmup(params: Iterable[torch.nn.Parameter], lr: float, weight_decay: float,
                      betas: tuple[float, float], warmup_steps: int
                      ) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """(optimizer, scheduler); step the scheduler once per optimizer step (not per micro-batch).

    The parameters must already be on their device: the fused kernel (one pass over all tensors, 6×
    faster than the default loop on a CPU for the 34 M-parameter predictor) is used on CPU and CUDA.
    """
    params = list(params)
    fused = all(p.device.type in FUSED_DEVICES for p in params) or None
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas), fused=fused)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, LinearWarmup(warmup_steps))
