"""The noise predictor's objective on latents, and the discriminator's hinge loss.

    generator:      mse_weight·MSE(z0, z_gt) + lpips_weight·LPIPS(z0, z_gt) + adv_weight·(−mean D(z0))
                    (the adversarial term only from optimizer step ``adversarial_start`` on)
    discriminator:  mean relu(1 − D(z_gt)) + mean relu(1 + D(z0))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from utils.training.latent_lpips import LatentLPIPS


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the discriminator (scalar ≥ 0; 0 once real ≥ 1 and fake ≤ −1 everywhere)."""
    return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()


def hinge_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Hinge loss of the generator: the mean logit of its samples, negated."""
    return -fake_logits.mean()


@dataclass(frozen=True)
class LossWeights:
    mse: float
    lpips: float
    adversarial: float
    adversarial_start: int  # optimizer step from which the adversarial term counts


class GeneratorLoss:
    """Weighted latent losses for one batch. ``lpips`` None drops the LPIPS term (weight 0)."""

    def __init__(self, weights: LossWeights, lpips: Optional[LatentLPIPS]):
        self.weights, self.lpips = weights, lpips

    def adversarial_on(self, step: int) -> bool:
        return self.weights.adversarial > 0 and step >= self.weights.adversarial_start

    def __call__(self, z0: torch.Tensor, z_gt: torch.Tensor, step: int,
                 discriminator: nn.Module) -> tuple[torch.Tensor, dict[str, float]]:
        """(scalar total loss, each term's unweighted value). ``discriminator`` must be frozen by the
        caller (no gradient for it here); it is not called before the adversarial start."""
        mse = F.mse_loss(z0, z_gt)
        zero = z0.new_zeros(())
        lpips = self.lpips(z0, z_gt).mean() if self.lpips is not None and self.weights.lpips > 0 else zero
        adversarial = hinge_g_loss(discriminator(z0)) if self.adversarial_on(step) else zero
        w = self.weights
        total = w.mse * mse + w.lpips * lpips + w.adversarial * adversarial
        return total, {"mse": mse.item(), "lpips": lpips.item(), "adv_g": adversarial.item()}
