#!/usr/bin/env python
"""Command-line super-resolution: one file or a whole folder, any backend.

    python inference_invsr.py -i photo.jpg -o out/
    python inference_invsr.py -i ../shared/datasets/Set5 -o out --backend realesrgan
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from tqdm import tqdm

from datapipe.image_io import ImageError, is_image_file, list_images
from utils.backends import BACKENDS, BackendUnavailable, create_backend, resolve_backend_name
from utils.config import load_config, parse_timesteps, with_overrides
from utils.invsr_weights import WeightsNotFound, download_weights
from utils.color_fix import METHODS as COLOR_FIXES
from utils.pipeline import FUSION_METHODS, BatchItem, check_stages, plan_outputs, process_batch

# Which config key "chopping size" means for each backend.
PATCH_SIZE_KEY = {"invsr": "basesr.chopping.pch_size", "realesrgan": "realesrgan.tile_size",
                  "bicubic": "bicubic.tile_size"}


def timesteps_type(text: str) -> list[int]:
    try:
        return parse_timesteps(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def outscale_type(text: str) -> float:
    value = float(text)
    if not 1 <= value <= 4:
        raise argparse.ArgumentTypeError("outscale must be between 1 and 4")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Image super-resolution (×4): InvSR, Real-ESRGAN or bicubic.")
    p.add_argument("-i", "--in_path", required=True, help="input image or folder")
    p.add_argument("-o", "--out_path", required=True, help="output folder, or an output file for one input")
    p.add_argument("--backend", choices=["auto", *sorted({"invsr", *BACKENDS})], default=None,
                   help="default: invsr when its weights are available, else realesrgan")
    p.add_argument("--cfg_path", default=None, help="OmegaConf YAML (default configs/sample-sd-turbo.yaml)")
    p.add_argument("--num_steps", type=int, choices=range(1, 6), default=None, help="InvSR sampling steps")
    p.add_argument("--timesteps", type=timesteps_type, default=None, help="InvSR timesteps, e.g. 200,100,50")
    p.add_argument("--chopping_size", type=int, default=None, help="patch size in input pixels")
    p.add_argument("--chopping_bs", type=int, default=None, help="patches per model call (InvSR)")
    p.add_argument("--color_fix", choices=COLOR_FIXES, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--outscale", type=outscale_type, default=None, help="final scale 1-4 (default 4)")
    p.add_argument("--format", choices=["png", "webp", "jpeg"], default=None, help="output format (folder runs)")
    p.add_argument("--sd_path", default=None, help="local SD-Turbo folder (diffusers layout)")
    p.add_argument("--started_ckpt_path", default=None, help="local noise_predictor_sd_turbo_v5.pth")
    pp = p.add_argument_group("post-processing (see docs/postprocessing.md)")
    pp.add_argument("--adaptive_scheduler", action="store_true", default=None,
                    help="InvSR: more steps for complex images")
    pp.add_argument("--smart_chopping", action="store_true", default=None,
                    help="overlap between --min_overlap and --max_overlap by local complexity")
    pp.add_argument("--min_overlap", type=float, default=None, help="smart chopping, fraction of a patch (0.25)")
    pp.add_argument("--max_overlap", type=float, default=None, help="smart chopping, fraction of a patch (0.50)")
    pp.add_argument("--attention_fusion", action="store_true", default=None,
                    help="blend the result with the bicubic upsampling where edges are weak")
    pp.add_argument("--fusion_method", choices=FUSION_METHODS, default=None)
    pp.add_argument("--edge_enhancement", type=float, default=None, metavar="STRENGTH",
                    help="edge-aware sharpening, 0 (off) to 1")
    pp.add_argument("--adaptive_guidance", action="store_true", default=None,
                    help="InvSR with cfg_scale > 1: guidance scaled by complexity")
    p.add_argument("-r", "--recursive", action="store_true", help="include sub-folders")
    p.add_argument("--overwrite", action="store_true", help="redo files whose output already exists")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def config_from_args(args: argparse.Namespace):
    """The run's config: the YAML with the command line's explicit choices applied."""
    cfg = load_config(args.cfg_path)
    return with_overrides(cfg, {
        "backend": args.backend,
        "num_steps": args.num_steps,
        "timesteps": args.timesteps,
        "basesr.chopping.extra_bs": args.chopping_bs,
        "color_fix": args.color_fix,
        "seed": args.seed,
        "outscale": args.outscale,
        "output.format": args.format,
        "sd_pipe.params.pretrained_model_name_or_path": args.sd_path,
        "model_start.ckpt_path": args.started_ckpt_path,
        **{f"postprocess.{key}": getattr(args, key) for key in (
            "adaptive_scheduler", "smart_chopping", "min_overlap", "max_overlap", "attention_fusion",
            "fusion_method", "edge_enhancement", "adaptive_guidance")},
    })


def plan(in_path: Path, out_path: Path, fmt: str, recursive: bool):
    """(source, output) pairs for a file or folder input."""
    if in_path.is_dir():
        sources = list_images(in_path, recursive)
        if not sources:
            raise ImageError(in_path, "no images found in this folder")
        pairs = plan_outputs(sources, out_path, fmt)
        if recursive:  # mirror sub-folders so equal names in different folders do not collide
            pairs = [(s, out_path / s.parent.relative_to(in_path) / o.name) for s, o in pairs]
        return pairs
    if not in_path.exists():
        raise ImageError(in_path, "file not found")
    if out_path.suffix and is_image_file(out_path):
        return [(in_path, out_path)]
    return plan_outputs([in_path], out_path, fmt)


def fetch_invsr_weights(cfg) -> None:
    """Asked for InvSR explicitly: download its weights when they are missing and the hub is reachable."""
    status = BACKENDS["invsr"].availability(cfg)
    if status.ok:
        return
    print("[backend] InvSR weights are not available locally; trying to download them", file=sys.stderr)
    try:
        download_weights(cfg)
    except WeightsNotFound as exc:
        if str(exc) == status.reason:  # nothing to download (e.g. an explicit path is wrong)
            raise
        raise WeightsNotFound([status.reason.removeprefix("InvSR: "), str(exc).removeprefix("InvSR: ")]) from exc


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.backend == "invsr":
            fetch_invsr_weights(cfg)
        name, notice = resolve_backend_name(cfg)
        if args.chopping_size is not None:
            cfg = with_overrides(cfg, {PATCH_SIZE_KEY[name]: args.chopping_size})
        check_stages(cfg, name)
        pairs = plan(Path(args.in_path), Path(args.out_path), cfg.output.format, args.recursive)
        print(f"[backend] {notice}", file=sys.stderr)
        backend = create_backend(name, cfg)
    except (BackendUnavailable, WeightsNotFound, ImageError, ValueError, KeyError, FileNotFoundError) as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 2

    bar = tqdm(total=len(pairs), unit="img", desc="images", disable=None)

    def patch_bar(src: Path):
        inner = tqdm(total=0, unit="patch", desc=src.name, leave=False, disable=None)

        def update(done: int, total: int) -> None:
            inner.total = total
            inner.n = done
            inner.refresh()
            if done == total:
                inner.close()
        return update

    def report(item: BatchItem) -> None:
        bar.update(1)
        if item.status == "error":
            tqdm.write(f"error: {item.reason}", file=sys.stderr)
        elif item.status == "ok" and item.reason:
            tqdm.write(f"note: {item.source.name}: {item.reason}", file=sys.stderr)

    try:
        items = process_batch(pairs, cfg, backend, args.overwrite, patch_bar, report)
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; finished files are kept, rerun to continue", file=sys.stderr)
        return 130
    bar.close()
    counts = {s: sum(i.status == s for i in items) for s in ("ok", "skipped", "error")}
    seconds = sum(i.seconds for i in items if i.status == "ok")
    per_image = f", {seconds / counts['ok']:.2f} s per image" if counts["ok"] else ""
    print(f"done: {counts['ok']} written, {counts['skipped']} skipped (output exists), "
          f"{counts['error']} failed{per_image} → {args.out_path}", file=sys.stderr)
    return 1 if counts["error"] else 0


if __name__ == "__main__":
    sys.exit(main())
