"""Exponential moving average of a model's weights (the copy that is validated and shipped)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """After each optimizer step: shadow ← decay·shadow + (1 − decay)·weights, for every floating
    tensor of the state dict (others are copied). ``model`` is the shadow, a frozen eval-mode copy."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1) (got {decay})")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        current = model.state_dict()
        for name, shadow in self.model.state_dict().items():
            value = current[name].detach()
            if shadow.is_floating_point():
                shadow.lerp_(value.to(shadow.dtype), 1.0 - self.decay)
            else:
                shadow.copy_(value)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"decay": self.decay, "num_updates": self.num_updates, "model": self.model.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay, self.num_updates = float(state["decay"]), int(state["num_updates"])
        self.model.load_state_dict(state["model"], strict=True)
