"""Speed and memory per backend and input size: raw model vs the full CLI path, fixed vs smart chopping.

    python benchmark.py                       # bicubic + realesrgan, 64² … 512², writes docs/benchmarks.md
    python benchmark.py --runtimes            # every runtime × precision per backend, one interleaved run

For each square input size (input pixels; the output is ×4 per side) and backend it measures the median
wall time over repeats of
  raw       the model alone on the whole input (Real-ESRGAN: one direct ncnn call; bicubic: one
            F.interpolate), no chopping, no file I/O;
  pipeline  the CLI path: read the PNG → utils.pipeline.chain (chopping, post-processing off) → write the PNG;
  smart     the same CLI path with postprocess.smart_chopping on,
  cli       `python inference_invsr.py -i in.png -o out.png --backend NAME` with default settings, as a new
            process (interpreter start, imports and model loading included),
and the peak resident memory while each ran. Seconds per input megapixel show whether time scales
linearly with the image area.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from utils.config import PROJECT_ROOT
from utils.evaluation.benchmark import run_benchmark
from utils.evaluation.report import documented_command
from utils.evaluation.runtime_benchmark import replace_section, run_runtime_benchmark


def main(argv: Optional[list[str]] = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=["bicubic", "realesrgan"])
    p.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256, 512], help="square input sizes (px)")
    p.add_argument("--repeats", type=int, default=3, help="repeats per measurement below --large")
    p.add_argument("--repeats-large", type=int, default=1, help="repeats at sizes >= --large")
    p.add_argument("--large", type=int, default=512)
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "docs" / "benchmarks.md")
    p.add_argument("--runtimes", action="store_true",
                   help="instead: each backend on every runtime and precision it can run here, at the first --sizes "
                        "(default backends realesrgan, span; section 'Runtimes and precisions' of --out)")
    p.add_argument("--sd_path", help="--runtimes with invsr: SD-Turbo folder (diffusers layout)")
    p.add_argument("--started_ckpt_path", help="--runtimes with invsr: noise predictor weights")
    args = p.parse_args(argv)
    if args.runtimes:
        backends = args.backends if "--backends" in argv else ["realesrgan", "span"]
        sizes = args.sizes if "--sizes" in argv else [128]
        section = run_runtime_benchmark(backends, sizes[0], args.repeats, args.config,
                                        {"sd_pipe.params.pretrained_model_name_or_path": args.sd_path,
                                         "model_start.ckpt_path": args.started_ckpt_path},
                                        documented_command("benchmark.py", argv))
        replace_section(args.out, section)
        return
    run_benchmark(args.backends, args.sizes, args.repeats, args.repeats_large, args.large, args.config, args.out,
                  documented_command("benchmark.py", argv))


if __name__ == "__main__":
    main()
