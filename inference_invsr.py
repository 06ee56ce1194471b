#!/usr/bin/env python
"""Command-line super-resolution: one file or a whole folder, any backend.

    python inference_invsr.py -i photo.jpg -o out/
    python inference_invsr.py -i ../shared/datasets/Set5 -o out --backend realesrgan
    python inference_invsr.py -i photos/ -o out/ --model 4x-UltraSharp.pth
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from utils.backends import BACKEND_CHOICES, BackendUnavailable, resolve_backend_name
from utils.backends.custom_model import SUFFIXES, SUPPORTED_SCALES
from utils.batch.console import EXIT_USAGE, run_batch_command
from utils.config import (COLOR_FIX_METHODS, FUSION_METHODS, MAX_STEPS, OUTPUT_FORMATS, PRECISIONS, RUNTIMES,
                          ConfigError, load_config, parse_timesteps, with_overrides)
from utils.devices import set_threads
from utils.settings import SPECS, config_key, config_problems, spec_for, unread_message, unread_settings
ENGINES = ("local", "ray")
EXAMPLES = """examples:
  %(prog)s -i photo.jpg -o out/                                   one file, the default backend
  %(prog)s -i photos/ -o out/ --backend span --outscale 2         a folder, fast ×2
  %(prog)s -i scans/ -o out/ --format jpeg --quality 90 -r        sub-folders too, JPEG output
  %(prog)s -i photo.jpg -o out/ --backend invsr --num_steps 2     diffusion (needs the InvSR weights)
  %(prog)s -i big.png -o out/ --tile_size 256 --overlap 16        smaller tiles, less memory
  %(prog)s -i photos/ -o /shared/out --engine ray --workers 4     on Ray (embedded, or --ray-address)
  %(prog)s -i photos/ -o out/ --model 4x-UltraSharp.pth           your own model file, at its scale

Unset options take their value from the config (--cfg_path); a setting the chosen backend does not use
is refused, and a bad value stops the run before any work (exit 2)."""


def timesteps_type(text: str) -> list[int]:
    try:
        return parse_timesteps(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    cfg = load_config()  # the defaults shown in --help
    pp = cfg.postprocess
    tiles = ", ".join(f"{name} {spec.tile_size}" for name, spec in SPECS.items())
    p = argparse.ArgumentParser(description="Image super-resolution (×2-×4): InvSR, Real-ESRGAN, SPAN, "
                                            "waifu2x or bicubic; or your own model file (--model, ×1-×8).",
                                epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-i", "--in_path", required=True, help="input image or folder")
    p.add_argument("-o", "--out_path", required=True, help="output folder, or an output file for one input")
    p.add_argument("--backend", choices=BACKEND_CHOICES, default=None,
                   help=f"default: {cfg.backend} (invsr when its weights are available, else realesrgan)")
    p.add_argument("--cfg_path", default=None, help="OmegaConf YAML (default configs/sample-sd-turbo.yaml)")
    p.add_argument("--tile_size", "--chopping_size", type=int, default=None,
                   help=f"tile (patch) size in input pixels; default per backend: {tiles} (invsr: 256 from "
                        "512² inputs up)")
    p.add_argument("--overlap", type=int, default=None,
                   help="context pixels each tile reads past its edge (all but invsr, whose patches overlap by "
                        "half); default: the model's own")
    p.add_argument("--chopping_bs", type=int, default=None,
                   help=f"tiles per model call (default {cfg.basesr.chopping.extra_bs})")
    p.add_argument("--color_fix", choices=COLOR_FIX_METHODS, default=None, help=f"default {cfg.color_fix}")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--outscale", type=float, default=None, help=f"final scale 1-4 (default {cfg.outscale:g})")
    size.add_argument("--width", type=int, default=None,
                      help="final width in pixels instead of a scale (height follows; 1-4× the input's)")
    size.add_argument("--height", type=int, default=None,
                      help="final height in pixels instead of a scale (width follows; 1-4× the input's)")
    p.add_argument("--format", choices=OUTPUT_FORMATS, default=None,
                   help=f"output format when -o is a folder (default {cfg.output.format})")
    p.add_argument("--quality", type=int, default=None, help=f"WebP/JPEG quality 1-100 (default {cfg.output.quality})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every usable core)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=f"engine that runs the model (default {cfg.runtime}: the fastest measured for the backend "
                        "on this kind of CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help=f"default {cfg.precision}: bfloat16 where the CPU computes it natively, else float32 "
                        "(float16 on CUDA)")
    invsr = p.add_argument_group("InvSR only")
    invsr.add_argument("--num_steps", type=int, choices=range(1, MAX_STEPS + 1), default=None,
                       help=f"sampling steps (default {cfg.num_steps}; replaces the config's timesteps with the "
                            "default list)")
    invsr.add_argument("--timesteps", type=timesteps_type, default=None, help="timesteps, e.g. 200,100,50")
    invsr.add_argument("--seed", type=int, default=None, help=f"default {cfg.seed}")
    invsr.add_argument("--sd_path", default=None, help="local SD-Turbo folder (diffusers layout)")
    invsr.add_argument("--started_ckpt_path", default=None, help="local noise_predictor_sd_turbo_v5.pth")
    p.add_argument_group("your own model (the custom backend)").add_argument(
        "--model", default=None, metavar="FILE",
        help=f"a model file ({' '.join(SUFFIXES)}) of any architecture spandrel 0.4.2 detects (ESRGAN, "
             "Real-ESRGAN Compact, SPAN, SwinIR, HAT, DAT, OmniSR, ...) at "
             f"{', '.join(f'×{s}' for s in SUPPORTED_SCALES)}, including ×1 restoration (denoise, JPEG); "
             "--outscale defaults to its scale and may reach it. Read as tensors only: a file whose loading "
             "would run code is refused; face restoration and inpainting models are refused")
    p.add_argument_group("waifu2x only").add_argument(
        "--denoise", type=int, default=None, help=f"JPEG noise removal -1 (off) to 3 (default {cfg.waifu2x.denoise})")
    post = p.add_argument_group("post-processing (see docs/postprocessing.md); off unless given")
    post.add_argument("--adaptive_scheduler", action="store_true", default=None,
                      help="InvSR: more steps for complex images")
    post.add_argument("--smart_chopping", action="store_true", default=None,
                      help="overlap between --min_overlap and --max_overlap by local complexity")
    post.add_argument("--min_overlap", type=float, default=None,
                      help=f"smart chopping, fraction of a tile (default {pp.min_overlap})")
    post.add_argument("--max_overlap", type=float, default=None,
                      help=f"smart chopping, fraction of a tile (default {pp.max_overlap})")
    post.add_argument("--attention_fusion", action="store_true", default=None,
                      help="blend the result with the bicubic upsampling where edges are weak (not bicubic)")
    post.add_argument("--fusion_method", choices=FUSION_METHODS, default=None, help=f"default {pp.fusion_method}")
    post.add_argument("--edge_enhancement", type=float, default=None, metavar="STRENGTH",
                      help="edge-aware sharpening, 0 (off) to 1")
    post.add_argument("--adaptive_guidance", action="store_true", default=None,
                      help="InvSR with cfg_scale > 1: guidance scaled by complexity")
    p.add_argument("-r", "--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--overwrite", action="store_true", help="redo every file, even those made with the same settings")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    ray = p.add_argument_group("distributed batch (optional: make setup-ray)")
    ray.add_argument("--engine", choices=ENGINES, default="local",
                     help="local: this process (default); ray: a pool of Ray actors, same outputs")
    ray.add_argument("--ray-address", default=None,
                     help="join this Ray cluster (host:6379 or ray://host:10001; default RAY_ADDRESS, else an "
                          "embedded local Ray)")
    ray.add_argument("--workers", type=int, default=None,
                     help="Ray actors, each with its own copy of the model (default: one per GPU, else per node)")
    return p


def given_flags(args: argparse.Namespace, backend: str) -> dict[str, str]:
    """Flag -> config key, for the settings the user set on the command line."""
    return {flag: key for flag in vars(args)
            if getattr(args, flag) is not None and (key := config_key(flag, backend)) is not None}


def user_overrides(args: argparse.Namespace, flags: dict[str, str]) -> dict:
    """Config overrides for the given ``flags`` (a flag always wins over the YAML)."""
    overrides = {key: getattr(args, flag) for flag, key in flags.items()}
    if args.num_steps is not None and args.timesteps is None:
        overrides["timesteps"] = None  # --num_steps picks the default list, replacing the YAML's timesteps
    return overrides


def flag_problems(problems: list[str], flags: dict[str, str]) -> list[str]:
    """Config problems, each with the flag (of ``flags``: flag -> config key) that caused it named:
    "argument --outscale: outscale must be between 1 and 4 (got 7)". Problems of the YAML stay as they are."""
    def flag_of(problem: str):
        # The full key first, so "min_overlap" is not taken for the "smart chopping" it is part of.
        for spelling in (lambda k: k, lambda k: k.rsplit(".", 1)[-1], lambda k: k.rsplit(".", 1)[-1].replace("_", " ")):
            for flag, key in flags.items():
                if spelling(key) in problem:
                    return flag
        return None
    return [f"argument --{flag}: {problem}" if (flag := flag_of(problem)) else problem for problem in problems]


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.model is not None and args.backend not in (None, "custom"):
        parser.error(f"--model runs your model file (the custom backend), not --backend {args.backend}")
    try:
        cfg = load_config(args.cfg_path)
        if args.backend is not None or args.model is not None:
            cfg = with_overrides(cfg, {"backend": "custom" if args.model is not None else args.backend})
        # An explicit backend is taken as named (the batch run says if it cannot run, or fetches InvSR's
        # weights); auto is resolved with the user's weight paths.
        if cfg.backend in SPECS:
            backend = cfg.backend
        else:
            weights = {f: k for f, k in given_flags(args, "invsr").items() if f in ("sd_path", "started_ckpt_path")}
            backend = resolve_backend_name(with_overrides(cfg, user_overrides(args, weights)))[0]
    except (ConfigError, KeyError, FileNotFoundError, BackendUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.engine != "ray":
        for flag, value in (("--ray-address", args.ray_address), ("--workers", args.workers)):
            if value is not None:
                parser.error(f"{flag} applies only to --engine ray")
    if args.workers is not None and args.workers < 1:
        parser.error(f"argument --workers: must be at least 1 (got {args.workers})")
    refused = unread_settings(vars(args), backend)
    if refused:
        chosen = "" if cfg.backend == backend else f" (--backend {cfg.backend} chose {backend} here)"
        parser.error("; ".join(f"--{unread_message(flag, backend)}" for flag in refused) + chosen)
    flags = given_flags(args, backend)
    try:
        cfg = with_overrides(cfg, user_overrides(args, flags))
    except KeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.model is not None and args.outscale is None:  # the file's own scale, not the config's
        try:
            cfg = with_overrides(cfg, {"outscale": float(spec_for("custom", args.model).scale)})
        except ValueError:
            pass  # the file's problem is reported below, with the others
    problems = config_problems(cfg, backend)
    if problems:
        parser.error("; ".join(flag_problems(problems, flags)))
    set_threads(cfg.threads)
    return run_batch_command(cfg, Path(args.in_path), Path(args.out_path), args.recursive, args.overwrite, args.debug,
                             args.engine, args.ray_address, args.workers)


if __name__ == "__main__":
    sys.exit(main())
