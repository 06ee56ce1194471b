"""A whole training run from a config file: what ``train_noise_predictor.py`` calls.

Before the trainer is built, inputs the config asks to generate are written into the save dir (main
process first, the others then find them): tiny random SD-Turbo weights (``build_tiny_sd``) and
synthetic HR images (``data.synthetic``). The config is then pointed at them.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from utils.backends.invsr.weights import sd_dir_problems
from utils.config import with_overrides
from utils.training.checkpoint import resolve_resume
from utils.training.config import load_training_config
from utils.training.synthetic import write_synthetic_images
from utils.training.tiny_sd import TINY_SD_DIRNAME, build_tiny_sd
from utils.training.trainer import Trainer, make_accelerator

log = logging.getLogger(__name__)
SYNTHETIC_DIR = "synthetic"


def generated_inputs(cfg: DictConfig, save_dir: Path) -> dict:
    """Write the generated inputs the config asks for (if not there yet); returns the overrides that
    select them."""
    overrides: dict = {}
    if cfg.build_tiny_sd:
        sd_dir = save_dir / TINY_SD_DIRNAME
        if sd_dir_problems(sd_dir):
            build_tiny_sd(sd_dir)
        overrides["sd_pipe.params.pretrained_model_name_or_path"] = str(sd_dir)
    synthetic = cfg.data.synthetic
    if synthetic is not None:
        root = save_dir / SYNTHETIC_DIR
        write_synthetic_images(root / "train", int(synthetic.train), int(synthetic.size), int(cfg.seed))
        overrides["data.train_dirs"] = [str(root / "train")]
        if int(synthetic.val) > 0:
            write_synthetic_images(root / "val", int(synthetic.val), int(synthetic.size), int(cfg.seed) + 1)
            overrides["validation.dir"] = str(root / "val")
    return overrides


def run_training(cfg_path: str | Path, max_steps: Optional[int] = None, save_dir: Optional[str | Path] = None,
                 resume: Optional[str | Path] = None) -> Optional[Path]:
    """Train per the YAML at ``cfg_path`` (flags override ``train.max_steps`` and ``save_dir``);
    ``resume``: a checkpoint folder or a save dir (its latest checkpoint). Returns the last checkpoint."""
    overrides = {key: value for key, value in (("train.max_steps", max_steps),
                                               ("save_dir", str(save_dir) if save_dir else None)) if value}
    cfg = load_training_config(cfg_path, overrides)
    out = Path(cfg.save_dir)
    accelerator = make_accelerator(cfg)
    with accelerator.main_process_first():
        out.mkdir(parents=True, exist_ok=True)
        cfg = with_overrides(cfg, generated_inputs(cfg, out))
    trainer = Trainer(cfg, out, accelerator)
    if resume:
        folder = resolve_resume(Path(resume))
        trainer.resume(folder)
        log.info("resumed from %s at step %d", folder, trainer.step)
    return trainer.fit(int(cfg.train.max_steps))
