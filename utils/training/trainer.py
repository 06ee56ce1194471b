"""The training loop of the noise predictor, on Hugging Face ``accelerate`` (one CPU, one GPU or many
via ``accelerate launch``; gradient accumulation, mixed precision and DDP are accelerate's).

One optimizer step = ``accumulation`` micro-batches per process, each of which
  1. runs the InvSR one-step forward (utils.training.forward),
  2. backpropagates the generator loss into the predictor (the discriminator frozen for it),
  3. trains the discriminator on (z_gt, detached z0) with the hinge loss.
After the step: LR schedulers, EMA, step counter; then logging, validation and checkpoints.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from utils.backends.invsr.sampling import POSITIVE_PROMPT
from utils.training.checkpoint import (INFERENCE_WEIGHTS, TRAINING_STATE, checkpoint_dir, prune_checkpoints,
                                       write_inference_weights)
from utils.training.config import accumulation_steps
from utils.training.data import DegradedPairs, ShardedBatches, collect_images
from utils.training.degradation import DegradationParams
from utils.training.discriminator import LatentDiscriminator
from utils.training.ema import EMA
from utils.training.forward import ForwardNoise, ForwardResult, TimestepTable, latent_shape, training_forward
from utils.training.latent_lpips import build_latent_lpips
from utils.training.losses import GeneratorLoss, LossWeights, hinge_d_loss
from utils.training.metrics_log import CsvLog
from utils.training.models import (build_training_models, count_parameters, enable_gradient_checkpointing,
                                   frozen, frozen_dtype)
from utils.training.schedule import adamw_with_warmup
from utils.training.validation import Validator

log = logging.getLogger(__name__)
TRAIN_FIELDS = ("step", "lr", "loss", "mse", "lpips", "adv_g", "d_loss", "d_real", "d_fake", "sec_per_step")


class Progress:
    """The optimizer-step counter, checkpointed with the rest of the state."""

    def __init__(self):
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])


def make_accelerator(cfg: DictConfig) -> Accelerator:
    """Accumulation from batch / (micro-batch × processes); mixed precision only on CUDA.

    The process count is only known once the accelerator exists (it reads the launcher's environment:
    ``accelerate launch``, or ``ACCELERATE_USE_CPU=1 torchrun --nproc_per_node N`` for CPU processes),
    so the accumulation is set after.
    """
    mixed = cfg.train.mixed_precision if torch.cuda.is_available() else "no"
    accelerator = Accelerator(mixed_precision=mixed)
    accelerator.gradient_accumulation_steps = accumulation_steps(
        int(cfg.train.batch_size), int(cfg.data.micro_batch_size), accelerator.num_processes)
    return accelerator


def _worker_init(_: int) -> None:
    import cv2

    # Each loader worker is one process already: OpenCV's and torch's own threads would oversubscribe.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class Trainer:
    """Everything of one run, built from a validated training config (see configs/train-*.yaml)."""

    def __init__(self, cfg: DictConfig, save_dir: Path, accelerator: Optional[Accelerator] = None):
        self.cfg, self.save_dir = cfg, Path(save_dir)
        self.accelerator = acc = accelerator or make_accelerator(cfg)
        set_seed(int(cfg.seed))  # identical initial weights on every process
        device = acc.device
        self.models = build_training_models(cfg, device, frozen_dtype(cfg.train.mixed_precision, device))
        latent_channels = self.models.vae.config.latent_channels
        discriminator = LatentDiscriminator(latent_channels, list(cfg.discriminator.channels)).to(device)
        if device.type == "cuda" and cfg.train.gradient_checkpointing:
            self.models.unet.enable_gradient_checkpointing()
            enable_gradient_checkpointing(self.models.noise_predictor)
        lpips = build_latent_lpips(cfg.loss.lpips_weights_path, latent_channels)
        if lpips is not None:
            lpips.to(device)
        loss = cfg.loss
        self.loss = GeneratorLoss(LossWeights(loss.mse_weight, loss.lpips_weight, loss.adversarial_weight,
                                              int(loss.adversarial_start)), lpips)
        train = cfg.train
        opt_g, self.sched_g = adamw_with_warmup(self.models.noise_predictor.parameters(), train.lr,
                                                train.weight_decay, train.betas, train.warmup_steps)
        opt_d, self.sched_d = adamw_with_warmup(discriminator.parameters(), cfg.discriminator.lr,
                                                train.weight_decay, train.betas, train.warmup_steps)
        # The LR schedulers stay unprepared: accelerate would step them once per process, and here a
        # step is one optimizer step of the whole batch however many processes share it.
        self.predictor, self.discriminator, self.opt_g, self.opt_d = acc.prepare(
            self.models.noise_predictor, discriminator, opt_g, opt_d)
        self.ema = EMA(acc.unwrap_model(self.predictor), float(train.ema_decay))
        self.progress = Progress()
        acc.register_for_checkpointing(self.sched_g, self.sched_d, self.ema, self.progress)
        self.table = TimestepTable.build(self.models.scheduler_config, list(cfg.timesteps), device)
        # A copy made outside inference mode: autograd may save it (cross-attention keys) for backward.
        self.prompt_embeds = self.models.prompt_embeds(POSITIVE_PROMPT).clone()
        self.params = DegradationParams.from_config(cfg.degradation)
        set_seed(int(cfg.seed), device_specific=True)  # different noise draws on every process
        self.train_log = CsvLog(self.save_dir / "metrics.csv", TRAIN_FIELDS)
        if acc.is_main_process:
            log.info("noise predictor %d parameters, discriminator %d, latent LPIPS %s; %d process(es), "
                     "%d micro-batch(es) of %d per step", count_parameters(self.predictor),
                     count_parameters(discriminator), "on" if lpips is not None else "OFF (no weights file)",
                     acc.num_processes, acc.gradient_accumulation_steps, cfg.data.micro_batch_size)

    @property
    def step(self) -> int:
        return self.progress.step

    @property
    def accumulation(self) -> int:
        return self.accelerator.gradient_accumulation_steps

    # ---------------------------------------------------------------------------------- one step

    def generator_loss(self, lq: torch.Tensor, gt: torch.Tensor, noise: Optional[ForwardNoise] = None
                       ) -> tuple[torch.Tensor, dict[str, float], ForwardResult]:
        """The predictor's loss on one micro-batch (lq b×3×h×w, gt b×3×4h×4w in [0, 1] on the
        device); ``noise`` defaults to fresh draws. Only the predictor receives its gradients."""
        if noise is None:
            noise = ForwardNoise.draw(latent_shape(self.models, lq.shape), len(self.table), self.accelerator.device)
        out = training_forward(self.models, self.predictor, lq, gt, self.table, noise, self.prompt_embeds)
        raw_discriminator = self.accelerator.unwrap_model(self.discriminator)
        with frozen(raw_discriminator):
            loss, parts = self.loss(out.z0, out.z_gt, self.step, raw_discriminator)
        return loss, {**parts, "loss": loss.item()}, out

    def discriminator_loss(self, out: ForwardResult) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of the discriminator on (z_gt real, detached z0 fake)."""
        # One forward for both halves: DDP expects a single forward per backward.
        real, fake = self.discriminator(torch.cat([out.z_gt, out.z0.detach()])).chunk(2)
        loss = hinge_d_loss(real, fake)
        return loss, {"d_loss": loss.item(), "d_real": real.mean().item(), "d_fake": fake.mean().item()}

    def micro_step(self, lq: torch.Tensor, gt: torch.Tensor) -> dict[str, float]:
        """Both passes on one micro-batch; the optimizers step on the last micro-batch of an optimizer
        step (accelerate skips them before). Returns this micro-batch's losses."""
        acc = self.accelerator
        with acc.accumulate(self.predictor, self.discriminator):
            g_loss, g_parts, out = self.generator_loss(lq, gt)
            acc.backward(g_loss)
            self.opt_g.step()
            self.opt_g.zero_grad(set_to_none=True)
            d_loss, d_parts = self.discriminator_loss(out)
            acc.backward(d_loss)
            self.opt_d.step()
            self.opt_d.zero_grad(set_to_none=True)
        return {**g_parts, **d_parts}

    def train_step(self, batches: Iterator[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
        """One optimizer step over ``accumulation`` micro-batches from ``batches``; returns their mean losses."""
        start = time.perf_counter()
        device = self.accelerator.device
        totals: dict[str, float] = {}
        for _ in range(self.accumulation):
            lq, gt = next(batches)
            parts = self.micro_step(lq.to(device, non_blocking=True), gt.to(device, non_blocking=True))
            for key, value in parts.items():
                totals[key] = totals.get(key, 0.0) + value / self.accumulation
        if not self.accelerator.sync_gradients:
            raise RuntimeError("micro-batches out of step with gradient accumulation")
        row = {"step": self.step + 1, "lr": self.sched_g.get_last_lr()[0], **self._across_processes(totals)}
        self.sched_g.step()
        self.sched_d.step()
        self.ema.update(self.accelerator.unwrap_model(self.predictor))
        self.progress.step += 1
        row["sec_per_step"] = time.perf_counter() - start
        return row

    def _across_processes(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of each value over all processes (one all-reduce; a no-op for one process)."""
        if self.accelerator.num_processes == 1:
            return values
        stacked = torch.tensor(list(values.values()), device=self.accelerator.device)
        return dict(zip(values, self.accelerator.reduce(stacked, reduction="mean").tolist()))

    # ------------------------------------------------------------------------------ data, state

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless micro-batches for this process, from where the current step left off."""
        data = self.cfg.data
        dataset = DegradedPairs(collect_images(list(data.train_dirs)), int(data.crop_size), float(data.hflip_prob),
                                self.params, int(self.cfg.seed))
        acc = self.accelerator
        sampler = ShardedBatches(int(data.micro_batch_size), acc.process_index, acc.num_processes,
                                 start=self.step * self.accumulation)
        workers = int(data.num_workers)
        # The loader's own generator: creating its iterator draws worker seeds, which from the global
        # RNG would shift the noise stream of a resumed run. Samples never use those seeds.
        return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                               pin_memory=acc.device.type == "cuda", persistent_workers=workers > 0,
                               worker_init_fn=_worker_init if workers > 0 else None,
                               generator=torch.Generator().manual_seed(int(self.cfg.seed))))

    def save(self) -> Path:
        """Write the checkpoint of the current step (all processes must call it); returns its folder."""
        acc = self.accelerator
        folder = checkpoint_dir(self.save_dir, self.step)
        acc.save_state(str(folder / TRAINING_STATE))
        if acc.is_main_process:
            write_inference_weights(folder / INFERENCE_WEIGHTS, self.ema.model.state_dict())
            prune_checkpoints(self.save_dir, self.cfg.train.keep_checkpoints)
        acc.wait_for_everyone()
        return folder

    def resume(self, folder: Path) -> None:
        """Restore everything saved by :meth:`save` (weights, optimizers, schedulers, EMA, step, RNG)."""
        self.accelerator.load_state(str(Path(folder) / TRAINING_STATE))

    # -------------------------------------------------------------------------------------- loop

    def fit(self, max_steps: int) -> Optional[Path]:
        """Train until ``max_steps`` optimizer steps; returns the last checkpoint folder (None if no step ran)."""
        acc, train = self.accelerator, self.cfg.train
        validator = None
        if self.cfg.validation.dir is not None and acc.is_main_process:
            validator = Validator(self.cfg.validation, self.params, int(self.cfg.seed), self.save_dir)
        batches = self.batches()
        last = None
        bar = tqdm(total=max_steps, initial=self.step, desc="training", unit="step",
                   disable=not acc.is_main_process)
        while self.step < max_steps:
            row = self.train_step(batches)
            final = self.step == max_steps
            if acc.is_main_process:
                self.train_log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", d=f"{row['d_loss']:.3f}")
            bar.update(1)
            if validator is not None and (final or self.step % int(self.cfg.validation.every) == 0):
                scores = validator.run(self.models, self.ema.model, self.step)
                bar.write(f"step {self.step}: val PSNR {scores['psnr']:.2f} dB, LPIPS {scores['lpips']:.4f}, "
                          f"NIQE {scores['niqe']:.3f}")
            if final or self.step % int(train.save_every) == 0:
                last = self.save()
                if acc.is_main_process:
                    bar.write(f"step {self.step}: checkpoint {last}")
        bar.close()
        return last
