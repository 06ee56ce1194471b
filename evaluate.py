"""Score super-resolution backends on the standard benchmarks, the same way the literature does.

Modes (all write into --out: results.jsonl cache, metrics.csv, summary.md, plots/):

  python evaluate.py --out results/eval                       # Set5, Set14, BSD68 × every available backend
  python evaluate.py --out results/eval --ablation --backends  # post-processing stages one at a time on Set14
  python evaluate.py --out results/paired --hr HR_DIR --sr SR_DIR --name other-tool
  python evaluate.py --out results/noref --sr SR_DIR          # no ground truth: NIQE only

LR inputs: each HR image is cropped (bottom/right) to a multiple of the scale and downscaled with PIL's
antialiased BICUBIC (close to MATLAB imresize, not identical). SR outputs are rounded to 8 bits before
scoring, as if saved to PNG. PSNR/SSIM: Y channel (BT.601, 16–235), ``scale`` border pixels cropped.
LPIPS: AlexNet v0.1 on the whole RGB image. NIQE (no reference, lower is better): of the SR output, on Y
with the same border crop, as MATLAB's niqe.m (`python -m utils.evaluation.niqe` installs its parameters).
Interrupted runs resume from results.jsonl; its entries are keyed by image, backend and the resolved config,
not by code, so delete it after changing a backend.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from utils.evaluation.datasets import DEFAULT_DATASETS, SCALE
from utils.evaluation.report import documented_command
from utils.evaluation.runner import DEFAULT_BACKENDS, EvaluationRequest, run_evaluation


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for the cache, CSV, summary and plots")
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS),
                   help="HR folders or names under ../shared/datasets (default: Set5 Set14 BSD68)")
    p.add_argument("--backends", nargs="*", default=list(DEFAULT_BACKENDS),
                   help="backends for the main table, post-processing off (unavailable ones are skipped); "
                        "give no name to run only the ablation")
    p.add_argument("--ablation", action="store_true", help="also run ABLATIONS on --ablation-datasets")
    p.add_argument("--ablation-datasets", nargs="+", default=["Set14"])
    p.add_argument("--ablation-backend", default="realesrgan")
    p.add_argument("--hr", type=Path, help="paired mode: folder of HR images (needs --sr)")
    p.add_argument("--sr", type=Path, help="folder of SR results: with --hr, paired mode (same file names); "
                   "alone, no-reference mode (NIQE only)")
    p.add_argument("--name", help="label of the --sr results (default: the SR folder name)")
    p.add_argument("--config", type=Path, help="base config (default: configs/sample-sd-turbo.yaml)")
    p.add_argument("--limit", type=int, help="only the first N images of each dataset (quick checks)")
    p.add_argument("--scale", type=int, default=SCALE,
                   help="border crop; with --sr only, the generated LR inputs are ×4")
    p.add_argument("--lpips-net", choices=["alex", "vgg"], default="alex")
    p.add_argument("--rgb", action="store_true", help="also report PSNR/SSIM on RGB")
    p.add_argument("--report", type=Path, help="also write the summary here (plots go to plots/ beside it)")
    args = p.parse_args(argv)
    if args.hr is not None and args.sr is None:
        p.error("--hr needs --sr (the results to score against it)")
    if args.sr is None and args.scale != SCALE:
        p.error(f"generated LR inputs are ×{SCALE}; --scale is for scoring --sr results")
    return args


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    command = documented_command("evaluate.py", sys.argv[1:] if argv is None else argv)
    return run_evaluation(EvaluationRequest(**vars(args)), command)


if __name__ == "__main__":
    main()
