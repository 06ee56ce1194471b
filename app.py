#!/usr/bin/env python
"""Super-resolution studio: a Gradio app (and HTTP API) over the same pipeline as the CLI.

    python app.py                               # http://127.0.0.1:7860, offline default backend
    python app.py --open                        # and open it in the browser
    python app.py --batch-root ~/photos --concurrency 1 --max-queue 20
    python app.py --engine ray --ray-address head:6379   # the Batch tab on a Ray cluster
"""
from __future__ import annotations

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no network calls

import argparse  # noqa: E402
import sys  # noqa: E402

from utils.backends import BACKEND_CHOICES  # noqa: E402
from utils.studio.launch import StudioOptions, launch  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Super-resolution studio (Gradio web UI and API).")
    p.add_argument("--server-name", default="127.0.0.1", help="interface to listen on (0.0.0.0: all)")
    p.add_argument("--server-port", type=int, default=7860)
    p.add_argument("--share", action="store_true", help="also publish through a Gradio share link")
    p.add_argument("--open", dest="open_browser", action="store_true",
                   help="open the studio in this machine's web browser once it is ready (make run does)")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help="default backend: invsr when its weights are available, else realesrgan")
    p.add_argument("--cfg_path", default=None, help="OmegaConf YAML (default configs/sample-sd-turbo.yaml)")
    p.add_argument("--sd_path", default=None, help="local SD-Turbo folder (diffusers layout)")
    p.add_argument("--started_ckpt_path", default=None, help="local noise_predictor_sd_turbo_v5.pth")
    p.add_argument("--batch-root", default="inputs", help="folders named in the Batch tab must be inside this")
    p.add_argument("--output-root", default="outputs", help="batch results from folders go under this")
    p.add_argument("--models-dir", default=None,
                   help="your own model files (.pth .pt .ckpt .safetensors, any architecture spandrel detects), "
                        "listed in the model picker as “Your models” (default weights/models in the project)")
    p.add_argument("--allow-model-upload", action=argparse.BooleanOptionalAction, default=None,
                   help="let visitors add model files to the models folder (up to 1 GB, and --max-file-size); "
                        "default: on, but off with --share or --server-name 0.0.0.0")
    p.add_argument("--concurrency", type=int, default=1, help="model runs at the same time")
    p.add_argument("--max-queue", type=int, default=20, help="requests waiting at most; more are turned away")
    p.add_argument("--max-file-size", default="50mb", help="largest upload, e.g. 50mb, 1gb")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest input image in pixels (overrides limits.max_input_pixels)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every usable core)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the Batch tab runs: this process, or Ray actors (make setup-ray)")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: join this cluster (default RAY_ADDRESS, else an embedded local Ray)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return launch(StudioOptions(**{k.replace("-", "_"): v for k, v in vars(args).items()}))


if __name__ == "__main__":
    sys.exit(main())
