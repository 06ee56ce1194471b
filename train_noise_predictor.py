#!/usr/bin/env python
"""Train or fine-tune InvSR's noise predictor (SD-Turbo frozen); checkpoints load with the CLI's
--started_ckpt_path.

    python train_noise_predictor.py --cfg_path configs/train-tiny.yaml --max_steps 20 --save_dir /tmp/npt
    accelerate launch train_noise_predictor.py --cfg_path configs/train-sd-turbo.yaml --save_dir /data/np
    python train_noise_predictor.py --cfg_path configs/train-sd-turbo.yaml --save_dir /data/np --resume /data/np
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

# Before torch loads: spinning idle OpenMP threads make CPU training several times slower whenever
# anything else runs on the machine (measured: 1.2 s/step passive against 4-15 s/step spinning).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from utils.backends.invsr.weights import WeightsNotFound  # noqa: E402
from utils.config import ConfigError  # noqa: E402
from utils.training.run import run_training  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train InvSR's noise predictor (one CPU, one GPU, or many GPUs with "
                                            "`accelerate launch`).")
    p.add_argument("--cfg_path", required=True, help="training YAML, e.g. configs/train-sd-turbo.yaml")
    p.add_argument("--max_steps", type=int, default=None,
                   help="optimizer steps (default: the config's train.max_steps)")
    p.add_argument("--save_dir", default=None, help="where checkpoints, logs and validation images go "
                                                    "(default: the config's save_dir)")
    p.add_argument("--resume", default=None, metavar="PATH",
                   help="continue from a checkpoint folder, or from the latest checkpoint of a save dir")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("accelerate").setLevel(logging.WARNING)  # ten lines per checkpoint otherwise
    try:
        last = run_training(args.cfg_path, args.max_steps, args.save_dir, args.resume)
    except (ConfigError, WeightsNotFound, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"last checkpoint: {last}" if last else "nothing to do: already at max_steps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
