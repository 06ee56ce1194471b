#!/usr/bin/env python
"""The command line's end-to-end cost on a 256² input against one direct whole-image Real-ESRGAN forward.

    python scripts/cli_overhead.py [--size 256] [--repeats 3]

Each side runs in its own fresh process (nothing else of ours running beside it), alternating, and the
ratio of the medians is printed. The CLI uses default settings (colour fix included); the forward is one
ncnn call after a small warm-up call, as a bare model user would time it.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from utils.config import PROJECT_ROOT
from utils.evaluation.datasets import DATASETS_ROOT

SOURCE = DATASETS_ROOT / "Set5" / "baby.png"
FORWARD = """
import sys, time
import numpy as np
from PIL import Image
from utils.backends.realesrgan import load_net, packaged_model_files
from utils.devices import cpu_threads
net = load_net(*packaged_model_files(), cpu_threads())
x = np.asarray(Image.open(sys.argv[1]).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
net(x[:, :32, :32])
start = time.perf_counter()
net(x)
print(time.perf_counter() - start)
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cli-overhead-"))
    src = tmp / "in.png"
    Image.open(SOURCE).convert("RGB").resize((args.size, args.size), Image.BICUBIC).save(src)
    cli, forward = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, str(PROJECT_ROOT / "inference_invsr.py"), "-i", str(src),
                        "-o", str(tmp / "out.png"), "--backend", "realesrgan", "--overwrite"],
                       check=True, capture_output=True)
        cli.append(time.perf_counter() - start)
        out = subprocess.run([sys.executable, "-c", FORWARD, str(src)], check=True, capture_output=True, text=True)
        forward.append(float(out.stdout.split()[-1]))
        print(f"CLI {cli[-1]:.2f} s, direct forward {forward[-1]:.2f} s", flush=True)
    ratio = statistics.median(cli) / statistics.median(forward)
    print(f"{args.size}² input: CLI {statistics.median(cli):.2f} s / direct forward "
          f"{statistics.median(forward):.2f} s = {ratio:.2f}× (medians of {args.repeats})")


if __name__ == "__main__":
    main()
