"""Training of the noise predictor (utils/training), on tiny random SD-Turbo weights and tiny predictors."""
from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from tiny_sd import TINY_NP_PARAMS, tiny_cfg, tiny_overrides  # noqa: F401 (fixtures)

from sampler_invsr import InvSamplerSR
from utils.backends.invsr.sampling import sample_patches
from utils.backends.invsr.noise_predictor import NoisePredictor
from utils.config import ConfigError, with_overrides
from utils.settings import RunSettings
from utils.training import kernels
from utils.training.checkpoint import INFERENCE_WEIGHTS, complete_checkpoints, write_inference_weights
from utils.training.config import accumulation_steps, load_training_config
from utils.training.data import DegradedPairs, ShardedBatches
from utils.training.degradation import DegradationParams, degrade
from utils.training.ema import EMA
from utils.training.forward import ForwardNoise
from utils.training.latent_lpips import LatentLPIPS, build_latent_lpips, load_latent_lpips
from utils.training.losses import GeneratorLoss, LossWeights, hinge_d_loss, hinge_g_loss
from utils.training.models import build_predictor, enable_gradient_checkpointing
from utils.training.run import run_training
from utils.training.schedule import adamw_with_warmup
from utils.training.synthetic import synthetic_image, write_synthetic_images
from utils.training.trainer import TRAIN_FIELDS, Trainer

ROOT = Path(__file__).resolve().parent.parent
PAPER_CFG = ROOT / "configs" / "train-sd-turbo.yaml"
TINY_CFG = ROOT / "configs" / "train-tiny.yaml"
KEYS_FILE = ROOT.parent / "shared" / "invsr" / "noise_predictor_sd_turbo_keys.txt"
SD_KEY = "sd_pipe.params.pretrained_model_name_or_path"
PAPER_RUN = {"save_dir": "/tmp/run", "data.train_dirs": ["/data/hr"]}  # what the paper's config leaves to the user


@pytest.fixture(scope="module")
def degradation() -> DegradationParams:
    return DegradationParams.from_config(OmegaConf.load(PAPER_CFG).degradation)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hr")
    write_synthetic_images(folder, 4, 80, seed=3)
    return folder


def training_cfg(tiny_overrides, image_dir, save_dir, **overrides):
    """configs/train-tiny.yaml on the test's tiny SD, a tiny predictor and discriminator, no validation."""
    base = {"build_tiny_sd": False, SD_KEY: tiny_overrides[SD_KEY], "model_start.params": TINY_NP_PARAMS,
            "data.synthetic": None, "data.train_dirs": [str(image_dir)], "save_dir": str(save_dir),
            "discriminator.channels": [8, 16]}
    return load_training_config(TINY_CFG, {**base, **overrides})


# ---------------------------------------------------------------------------------- degradation

def test_kernels_follow_their_formulas():
    g = kernels.gaussian_kernel(3, 1.0, 1.0, 0.0)
    assert g[1, 1] == pytest.approx(1 / (1 + 4 * math.exp(-0.5) + 4 * math.exp(-1)), abs=1e-12)  # 0.204180
    assert g.sum() == pytest.approx(1.0)
    # β = 1 makes the generalized Gaussian the plain one; a 90° turn swaps the axes.
    np.testing.assert_allclose(kernels.generalized_gaussian_kernel(9, 2.0, 0.7, 0.3, 1.0),
                               kernels.gaussian_kernel(9, 2.0, 0.7, 0.3), atol=1e-12)
    np.testing.assert_allclose(kernels.gaussian_kernel(9, 2.0, 0.5, math.pi / 2),
                               kernels.gaussian_kernel(9, 2.0, 0.5, 0.0).T, atol=1e-12)
    plateau = kernels.plateau_kernel(5, 1.0, 1.0, 0.0, 1.0)  # 1 / (1 + r²) before normalising
    assert plateau[2, 3] / plateau[2, 2] == pytest.approx(0.5) and plateau[3, 3] / plateau[2, 2] == pytest.approx(1 / 3)
    sinc = kernels.sinc_kernel(21, math.pi / 2)
    assert sinc.sum() == pytest.approx(1.0) and sinc.min() < 0  # ringing lobes
    np.testing.assert_allclose(sinc, sinc.T, atol=1e-15)


def test_degradation_size_range_and_seed_determinism(degradation):
    gt = synthetic_image(64, np.random.default_rng(0)).astype(np.float32) / 255
    outs = [degrade(gt, degradation, np.random.default_rng(seed)) for seed in (5, 5, 6)]
    lq = outs[0]
    assert lq.shape == (16, 16, 3) and lq.dtype == np.float32
    assert 0.0 <= lq.min() and lq.max() <= 1.0
    np.testing.assert_array_equal(lq * 255, np.round(lq * 255))  # 8-bit levels, like a saved file
    np.testing.assert_array_equal(outs[0], outs[1])
    assert np.abs(outs[0] - outs[2]).mean() > 1e-3
    # Still the same picture: close to the area-downscaled original on average.
    reference = gt.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    assert np.abs(lq.mean(axis=(0, 1)) - reference.mean(axis=(0, 1))).max() < 0.1
    with pytest.raises(ValueError, match="divisible by 4"):
        degrade(gt[:63], degradation, np.random.default_rng(0))


def test_pairs_are_a_function_of_the_index_and_batches_shard(image_dir, degradation):
    pairs = DegradedPairs(sorted(image_dir.iterdir()), 64, 0.5, degradation, seed=1)
    lq, gt = pairs[5]
    assert lq.shape == (3, 16, 16) and gt.shape == (3, 64, 64)
    torch.testing.assert_close(pairs[5][0], lq, rtol=0, atol=0)
    assert not torch.equal(pairs[6][1], gt)
    batches = iter(ShardedBatches(micro_batch_size=2, rank=1, world_size=2, start=3))
    assert next(batches) == [14, 15] and next(batches) == [18, 19]


# --------------------------------------------------------------------------- losses, schedule, EMA

def test_hinge_losses():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # real: relu(1 − 2) = 0, relu(0.5) = 0.5 -> 0.25; fake: relu(−1) = 0, relu(1.5) = 1.5 -> 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(1.0)
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)
    assert hinge_d_loss(torch.full((3,), 1.0), torch.full((3,), -1.0)).item() == 0.0


class ConstantCritic(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, z):
        self.calls += 1
        return torch.full((z.shape[0], 1, 2, 2), 0.5)


def test_adversarial_term_is_zero_before_its_start_step():
    loss = GeneratorLoss(LossWeights(mse=1.0, lpips=2.0, adversarial=0.1, adversarial_start=5), lpips=None)
    z0, z_gt = torch.zeros(2, 4, 4, 4), torch.ones(2, 4, 4, 4)
    critic = ConstantCritic()
    before, parts = loss(z0, z_gt, step=4, discriminator=critic)
    assert parts == {"mse": 1.0, "lpips": 0.0, "adv_g": 0.0} and before.item() == 1.0 and critic.calls == 0
    after, parts = loss(z0, z_gt, step=5, discriminator=critic)
    assert parts["adv_g"] == -0.5 and after.item() == pytest.approx(1.0 - 0.05) and critic.calls == 1


def test_linear_warmup_then_constant():
    optimizer, scheduler = adamw_with_warmup([torch.nn.Parameter(torch.zeros(1))], lr=5e-5, weight_decay=0.01,
                                             betas=(0.9, 0.999), warmup_steps=4)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    np.testing.assert_allclose(lrs, [1.25e-5, 2.5e-5, 3.75e-5, 5e-5, 5e-5, 5e-5], rtol=1e-12)


def test_ema_moves_a_tenth_of_the_way_per_update():
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.1)
    ema.update(model)
    assert ema.model.weight.item() == pytest.approx(0.19)
    restored = EMA(torch.nn.Linear(1, 1, bias=False), decay=0.5)
    restored.load_state_dict(ema.state_dict())
    assert restored.decay == 0.9 and restored.num_updates == 2 and restored.model.weight.item() == pytest.approx(0.19)
    assert not ema.model.weight.requires_grad


def random_latent_lpips(seed: int) -> LatentLPIPS:
    """Random trunk and non-negative lin weights: a valid (if meaningless) weights file's content."""
    torch.manual_seed(seed)
    net = LatentLPIPS()
    for lin in net.lins:
        torch.nn.init.uniform_(lin.weight, 0.0, 1.0)
    return net


def test_latent_lpips_from_a_weights_file_or_off_with_a_warning(tmp_path):
    net = random_latent_lpips(0)
    path = tmp_path / "latent_lpips.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    loaded = load_latent_lpips(path)
    x, y = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert loaded(x, x).abs().max().item() < 1e-6
    assert (loaded(x, y) > 0).all() and not any(p.requires_grad for p in loaded.parameters())
    assert net.features[0].weight.shape == (64, 4, 3, 3)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert loaded(x, y).shape == (2,)  # 8×8 stays 8×8 through all 13 convolutions
    with pytest.warns(UserWarning, match="OFF"):
        assert build_latent_lpips(None) is None
    net.lins[0].weight.data[0, 0] = -1.0
    torch.save(net.state_dict(), tmp_path / "negative.pth")
    with pytest.raises(ValueError, match="non-negative"):
        load_latent_lpips(tmp_path / "negative.pth")


def test_gradient_checkpointing_keeps_the_gradients():
    torch.manual_seed(0)
    plain = NoisePredictor(**TINY_NP_PARAMS)
    checkpointed = NoisePredictor(**TINY_NP_PARAMS)
    checkpointed.load_state_dict(plain.state_dict())
    assert enable_gradient_checkpointing(checkpointed) == 3  # two down blocks and the mid block
    x, eps = torch.rand(2, 3, 16, 16), torch.randn(2, 4, 8, 8)
    for model in (plain, checkpointed):
        model(x, torch.tensor([199.0]), eps).square().mean().backward()
    for a, b in zip(plain.parameters(), checkpointed.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------ config

def test_paper_config_and_accumulation():
    with pytest.raises(ConfigError, match="save_dir is not set.*data.train_dirs is empty"):
        load_training_config(PAPER_CFG)
    cfg = load_training_config(PAPER_CFG, PAPER_RUN)
    assert list(cfg.timesteps) == [250, 200, 150, 100] and cfg.train.batch_size == 64
    assert accumulation_steps(64, cfg.data.micro_batch_size, 1) == 8
    assert accumulation_steps(64, 8, 4) == 2
    with pytest.raises(ConfigError, match="multiple"):
        accumulation_steps(64, 6, 1)


def test_checkpoint_has_the_released_keys(tmp_path):
    path = write_inference_weights(tmp_path / INFERENCE_WEIGHTS,
                                   build_predictor(load_training_config(PAPER_CFG, PAPER_RUN)).state_dict())
    expected = {}
    for line in KEYS_FILE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split()
            expected[name] = tuple(int(d) for d in shape.split(","))
    state = torch.load(path, weights_only=True)
    assert {k: tuple(v.shape) for k, v in state.items()} == expected


# ------------------------------------------------------------------------------- the trainer

@pytest.fixture(scope="module")
def lpips_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("lpips") / "latent_lpips.pth"
    torch.save(random_latent_lpips(1).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def gan_trainer(tiny_overrides, image_dir, lpips_file, tmp_path_factory) -> Trainer:
    """Every loss term on from step 0."""
    cfg = training_cfg(tiny_overrides, image_dir, tmp_path_factory.mktemp("gan"),
                       **{"loss.adversarial_start": 0, "loss.lpips_weights_path": str(lpips_file)})
    return Trainer(cfg, cfg.save_dir)


def batch(trainer: Trainer, size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``size`` training pairs of the trainer's images, stacked."""
    pairs = DegradedPairs(sorted(Path(trainer.cfg.data.train_dirs[0]).iterdir()), 64, 0.5, trainer.params, seed=0)
    lq, gt = zip(*(pairs[i] for i in range(size)))
    return torch.stack(lq), torch.stack(gt)


def test_one_training_step_is_one_sampler_step(gan_trainer, tiny_cfg):
    """z0 of the training forward at t = 200, decoded, is the sampler's 1-step output for the same draws."""
    m = gan_trainer.models
    lq, gt = batch(gan_trainer, 1)
    noise = ForwardNoise(t_index=torch.tensor([1]),  # timesteps [250, 200, 150, 100]
                         vae_lq=torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(7)),
                         predictor=torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(8)),
                         vae_gt=torch.zeros(1, 4, 8, 8))
    with torch.no_grad():
        _, parts, out = gan_trainer.generator_loss(lq, gt, noise)
        decoded = (m.vae.decode(out.z0 / m.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)
        settings = RunSettings.from_config(with_overrides(tiny_cfg, {"timesteps": [200]}), "invsr")
        sampled = sample_patches(m, lq, settings, [torch.Generator().manual_seed(7)],
                                 [torch.Generator().manual_seed(8)])
    assert out.z0.shape == out.z_gt.shape == out.z_t.shape == (1, 4, 8, 8) and decoded.shape == (1, 3, 64, 64)
    torch.testing.assert_close(decoded, sampled, rtol=0, atol=1e-5)
    assert parts["mse"] == pytest.approx(torch.nn.functional.mse_loss(out.z0, out.z_gt).item())


def test_gradients_reach_only_the_noise_predictor(gan_trainer):
    t = gan_trainer
    lq, gt = batch(t)
    loss, parts, out = t.generator_loss(lq, gt)
    assert parts["lpips"] > 0 and parts["adv_g"] != 0
    loss.backward()
    grads = [p.grad for p in t.models.noise_predictor.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum().item() for g in grads) > 0
    assert t.models.noise_predictor.encoder.conv_in.weight.grad.abs().sum() > 0
    frozen_modules = (t.models.vae, t.models.unet, t.models.text_encoder, t.discriminator, t.loss.lpips)
    assert all(p.grad is None for module in frozen_modules for p in module.parameters())
    before = [g.clone() for g in grads]
    d_loss, _ = t.discriminator_loss(out)
    d_loss.backward()
    assert all(p.grad is not None for p in t.discriminator.parameters())
    assert all(torch.equal(a, p.grad) for a, p in zip(before, t.models.noise_predictor.parameters()))
    t.opt_g.zero_grad(set_to_none=True)
    t.opt_d.zero_grad(set_to_none=True)


def test_a_few_steps_on_a_fixed_batch_lower_the_loss(tiny_overrides, image_dir, tmp_path):
    cfg = training_cfg(tiny_overrides, image_dir, tmp_path, **{
        "train.lr": 2e-3, "train.warmup_steps": 0, "loss.adversarial_weight": 0.0,
        "data.micro_batch_size": 2, "train.batch_size": 2})
    t = Trainer(cfg, tmp_path)
    lq, gt = batch(t)
    noise = ForwardNoise.draw((2, 4, 8, 8), len(t.table), torch.device("cpu"), torch.Generator().manual_seed(0))
    with torch.no_grad():
        start = t.generator_loss(lq, gt, noise)[1]["mse"]
    rows = [t.train_step(itertools.repeat((lq, gt))) for _ in range(8)]
    with torch.no_grad():
        end = t.generator_loss(lq, gt, noise)[1]["mse"]
    assert end < 0.6 * start, (start, end, [r["mse"] for r in rows])
    assert t.step == 8 and set(rows[0]) == set(TRAIN_FIELDS)


def test_resume_gives_the_same_next_step(tiny_overrides, image_dir, tmp_path):
    # Two micro-batches per step, adversarial term from step 2: the resumed step uses every part.
    cfg = training_cfg(tiny_overrides, image_dir, tmp_path / "a", **{"loss.adversarial_start": 2})
    a = Trainer(cfg, tmp_path / "a")
    data = a.batches()
    a.train_step(data)
    a.train_step(data)
    folder = a.save()
    expected = a.train_step(data)
    b = Trainer(with_overrides(cfg, {"save_dir": str(tmp_path / "b")}), tmp_path / "b")
    b.resume(folder)
    assert b.step == 2
    got = b.train_step(b.batches())
    assert expected["adv_g"] != 0
    assert {k: v for k, v in got.items() if k != "sec_per_step"} == \
           {k: v for k, v in expected.items() if k != "sec_per_step"}
    for module in ("predictor", "discriminator"):
        for (name, x), y in zip(getattr(a, module).state_dict().items(), getattr(b, module).state_dict().values()):
            assert torch.equal(x, y), f"{module}.{name}"
    assert all(torch.equal(x, y) for x, y in zip(a.ema.model.state_dict().values(), b.ema.model.state_dict().values()))
    assert a.sched_g.get_last_lr() == b.sched_g.get_last_lr()


# ------------------------------------------------------------------------ a whole run, then sampling

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """run_training on configs/train-tiny.yaml with a tiny predictor: (save dir, last checkpoint)."""
    folder = tmp_path_factory.mktemp("run")
    cfg = with_overrides(OmegaConf.load(TINY_CFG), {
        "model_start.params": TINY_NP_PARAMS, "discriminator.channels": [8, 16],
        "data.synthetic": {"train": 3, "val": 1, "size": 64}, "validation.every": 1})
    path = folder / "train.yaml"
    OmegaConf.save(cfg, path)
    return folder, run_training(path, max_steps=2, save_dir=folder / "out")


def test_a_run_writes_logs_validation_and_checkpoints(tiny_run):
    folder, last = tiny_run
    out = folder / "out"
    assert last == out / "checkpoints" / "step_0000002" and complete_checkpoints(out) == [last]
    rows = (out / "metrics.csv").read_text().splitlines()
    assert rows[0] == ",".join(TRAIN_FIELDS)
    assert [r.split(",")[:2] for r in rows[1:]] == [["1", "1e-05"], ["2", "2e-05"]]  # step, warm-up LR
    val = (out / "val_metrics.csv").read_text().splitlines()
    assert val[0] == "step,psnr,lpips,niqe,images" and [r.split(",")[0] for r in val[1:]] == ["1", "2"]
    psnr, lpips = (float(v) for v in val[1].split(",")[1:3])
    assert 5 < psnr < 40 and 0 < lpips < 1.5
    assert (out / "val" / "step_0000002" / "img_0000.png").is_file()
    assert (out / "val" / "inputs" / "img_0000_lq.png").is_file()
    # Resuming from the save dir continues at step 3 and appends to the same log.
    run_training(folder / "train.yaml", max_steps=3, save_dir=out, resume=out)
    assert (out / "metrics.csv").read_text().splitlines()[-1].split(",")[0] == "3"
    assert complete_checkpoints(out)[-1].name == "step_0000003"


def test_a_checkpoint_loads_into_the_sampler_and_samples(tiny_run, tiny_cfg):
    folder, last = tiny_run
    ckpt = last / INFERENCE_WEIGHTS
    state = torch.load(ckpt, weights_only=True)
    assert set(state) == set(NoisePredictor(**TINY_NP_PARAMS).state_dict())  # no wrapper prefixes
    sampler = InvSamplerSR(with_overrides(tiny_cfg, {"model_start.ckpt_path": str(ckpt),
                                                     SD_KEY: str(folder / "out" / "tiny-sd-turbo")}))
    loaded = sampler.backend.models.noise_predictor.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sr = sampler.sample_func(lr)
    assert sr.shape == (1, 64, 64, 3) and np.isfinite(sr).all() and 0 <= sr.min() and sr.max() <= 1
    assert sr.std() > 0.01
