"""Download the InvSR weights (SD-Turbo and the noise predictor) so that later runs work offline.

    python scripts/download_weights.py                 # into the Hugging Face cache
    python scripts/download_weights.py --weights-dir   # into the project's weights/ folder instead
"""
from __future__ import annotations

import argparse
import sys

from utils.backends.invsr.weights import WeightsNotFound, download_weights
from utils.config import WEIGHTS_DIR, load_config, with_overrides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML config (default: configs/sample-sd-turbo.yaml)")
    parser.add_argument("--cache_dir", help="Hugging Face cache folder (default: $HF_HOME/hub)")
    parser.add_argument("--weights-dir", action="store_true",
                        help=f"store the files under {WEIGHTS_DIR} instead of the Hugging Face cache")
    args = parser.parse_args(argv)
    cfg = with_overrides(load_config(args.config), {"sd_pipe.params.cache_dir": args.cache_dir})
    try:
        weights = download_weights(cfg, WEIGHTS_DIR if args.weights_dir else None)
    except WeightsNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"SD-Turbo:        {weights.sd_dir}")
    print(f"noise predictor: {weights.noise_predictor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
