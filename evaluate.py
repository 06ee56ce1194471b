"""Score super-resolution backends on the standard benchmarks, the same way the literature does.

Modes (all write into --out: results.jsonl cache, metrics.csv, summary.md, plots/):

  python evaluate.py --out results/eval                       # Set5, Set14, BSD68 × every available backend
  python evaluate.py --out results/eval --ablation --backends  # post-processing stages one at a time on Set14
  python evaluate.py --out results/paired --hr HR_DIR --sr SR_DIR --name other-tool

LR inputs: each HR image is cropped (bottom/right) to a multiple of the scale and downscaled with PIL's
antialiased BICUBIC (close to MATLAB imresize, not identical). SR outputs are rounded to 8 bits before
scoring, as if saved to PNG. PSNR/SSIM: Y channel (BT.601, 16–235), ``scale`` border pixels cropped.
LPIPS: AlexNet v0.1 on the whole RGB image. Interrupted runs resume from results.jsonl; its entries
are keyed by image, backend and the resolved config, not by code, so delete it after changing a backend.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from datapipe.image_io import list_images
from utils.backends import backend_status, create_backend
from utils.config import PROJECT_ROOT, load_config, with_overrides
from utils.devices import cpu_threads
from utils.metrics import LPIPS, PeakRSS, score_pair
from utils.pipeline import run_pipeline, to_array, to_tensor

DATASETS_ROOT = PROJECT_ROOT.parent / "shared" / "datasets"
DEFAULT_DATASETS = ("Set5", "Set14", "BSD68")
DEFAULT_BACKENDS = ("bicubic", "realesrgan", "invsr")
SCALE = 4
LR_RESIZE = "PIL Image.resize(BICUBIC), antialiased, after cropping HR to a multiple of 4"

# Every post-processing stage off: the "off" rows and the base of each ablation.
BASE_OVERRIDES = {
    "color_fix": "none",
    "outscale": SCALE,
    "postprocess.adaptive_scheduler": False,
    "postprocess.smart_chopping": False,
    "postprocess.attention_fusion": False,
    "postprocess.edge_enhancement": 0.0,
    "postprocess.adaptive_guidance": False,
}
# The ablation, in one place: row name -> overrides applied on top of BASE_OVERRIDES (one stage each).
# adaptive_scheduler / adaptive_guidance only act on InvSR; add them here when ablating that backend.
ABLATIONS = {
    "off": {},
    "color_fix=ycbcr": {"color_fix": "ycbcr"},
    "color_fix=wavelet": {"color_fix": "wavelet"},
    "color_fix=histogram": {"color_fix": "histogram"},
    "color_fix=hybrid": {"color_fix": "hybrid"},
    # Set14's LR images fit one default 256-px tile, so chopping is ablated with 64-px tiles.
    "tiles=64": {"realesrgan.tile_size": 64},
    "tiles=64+smart_chopping": {"realesrgan.tile_size": 64, "postprocess.smart_chopping": True},
    "attention_fusion": {"postprocess.attention_fusion": True},
    "edge_enhancement=0.5": {"postprocess.edge_enhancement": 0.5},
}

BASE_COLUMNS = ["image", "dataset", "backend", "config", "psnr", "ssim", "lpips", "seconds",
                "peak_rss_mb", "rss_delta_mb", "load_avg", "device", "hr_width", "hr_height", "lr_width", "lr_height"]
RGB_COLUMNS = ["psnr_rgb", "ssim_rgb"]


# ----------------------------------------------------------------------------------------------- data

def load_rgb(path: Path) -> np.ndarray:
    """H×W×3 uint8 (grayscale and palette files are expanded to RGB)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Bicubic ×1/scale of an HR image already cropped to a multiple of ``scale``."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1×3×H×W float in [0, 1] -> H×W×3 uint8, as the image would be saved."""
    return (np.clip(to_array(x), 0, 1) * 255.0).round().astype(np.uint8)


def resolve_dataset(name: str) -> Path:
    """A folder path, or a dataset name under ../shared/datasets."""
    path = Path(name)
    if not path.is_dir():
        path = DATASETS_ROOT / name
    if not path.is_dir():
        raise SystemExit(f"dataset folder not found: {name} (nor {path})")
    return path


# ---------------------------------------------------------------------------------------------- cache

def config_digest(cfg: DictConfig) -> str:
    return hashlib.sha1(OmegaConf.to_yaml(cfg, resolve=True).encode()).hexdigest()[:12]


class ResultCache:
    """Per-image results appended to a jsonl file, so an interrupted evaluation resumes where it stopped."""

    def __init__(self, path: Path):
        self.path = path
        self.entries: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by an interruption: redo that image
                    continue
                self.entries[entry["key"]] = entry

    def get(self, key: str) -> Optional[dict]:
        return self.entries.get(key)

    def put(self, key: str, result: dict) -> dict:
        entry = {"key": key, **result}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[key] = entry
        return entry


# -------------------------------------------------------------------------------------------- scoring

@dataclass
class Scorer:
    lpips: LPIPS
    scale: int
    rgb: bool

    def __call__(self, sr: np.ndarray, hr: np.ndarray) -> dict:
        return score_pair(sr, hr, crop=self.scale, lpips=self.lpips, rgb=self.rgb)


def run_backend(backend_name: str, config_name: str, cfg: DictConfig, dataset: Path, images: list[Path],
                scorer: Scorer, cache: ResultCache, study: str) -> list[dict]:
    """Upscale the LR version of every HR image with one backend/config; cached images are not redone."""
    digest = config_digest(cfg)
    rows, backend = [], None
    bar = tqdm(images, desc=f"{dataset.name}/{backend_name}/{config_name}", unit="img", leave=False)
    for path in bar:
        key = "|".join([dataset.name, path.name, backend_name, digest, scorer.lpips.net, str(scorer.rgb)])
        entry = cache.get(key)
        if entry is None:
            if backend is None:  # loaded only when something is left to compute
                backend = create_backend(backend_name, cfg)
            hr = modcrop(load_rgb(path), scorer.scale)
            lr = make_lr(hr, scorer.scale)
            lr_t = to_tensor(lr.astype(np.float32) / 255.0)
            with PeakRSS() as mem:
                start = time.perf_counter()
                sr_t, info = run_pipeline(lr_t, cfg, backend)
                seconds = time.perf_counter() - start
            entry = cache.put(key, {
                "image": path.name, "dataset": dataset.name, "backend": backend_name,
                **scorer(to_uint8(sr_t), hr), "seconds": seconds, "peak_rss_mb": mem.peak_mb,
                "rss_delta_mb": mem.delta_mb, "load_avg": os.getloadavg()[0], "device": info.device,
                "hr_width": hr.shape[1], "hr_height": hr.shape[0], "lr_width": lr.shape[1], "lr_height": lr.shape[0],
            })
        rows.append({**entry, "config": config_name, "study": study})
    return rows


def match_pairs(hr_dir: Path, sr_dir: Path) -> list[tuple[Path, Path]]:
    """(HR, SR) files with the same name; the extension may differ (a.png vs a.jpg)."""
    sr_by_stem = {p.stem: p for p in list_images(sr_dir)}
    pairs = [(hr, sr_by_stem[hr.stem]) for hr in list_images(hr_dir) if hr.stem in sr_by_stem]
    if not pairs:
        raise SystemExit(f"no file names in common between {hr_dir} and {sr_dir}")
    return pairs


def align_hr(hr: np.ndarray, sr: np.ndarray, scale: int) -> np.ndarray:
    """HR cropped to the SR size when the tool worked on an HR cropped to a multiple of ``scale``."""
    if hr.shape == sr.shape:
        return hr
    dh, dw = hr.shape[0] - sr.shape[0], hr.shape[1] - sr.shape[1]
    if 0 <= dh < scale and 0 <= dw < scale and hr.shape[2] == sr.shape[2]:
        return hr[: sr.shape[0], : sr.shape[1]]
    raise ValueError(f"SR size {sr.shape[1]}×{sr.shape[0]} does not match HR {hr.shape[1]}×{hr.shape[0]}")


def run_paired(hr_dir: Path, sr_dir: Path, label: str, scorer: Scorer, cache: ResultCache) -> list[dict]:
    rows = []
    for hr_path, sr_path in tqdm(match_pairs(hr_dir, sr_dir), desc=f"{hr_dir.name}/{label}", unit="img",
                                 leave=False):
        key = "|".join(["paired", str(hr_path.resolve()), str(sr_path.resolve()), str(sr_path.stat().st_mtime_ns),
                        scorer.lpips.net, str(scorer.rgb)])
        entry = cache.get(key)
        if entry is None:
            sr = load_rgb(sr_path)
            hr = align_hr(load_rgb(hr_path), sr, scorer.scale)
            entry = cache.put(key, {"image": hr_path.name, "dataset": hr_dir.name, "backend": label,
                                    **scorer(sr, hr), "hr_width": hr.shape[1], "hr_height": hr.shape[0]})
        rows.append({**entry, "config": "-", "study": "paired"})
    return rows


# -------------------------------------------------------------------------------------------- writers

def write_csv(rows: list[dict], path: Path) -> None:
    """One line per image; fixed columns first, then any extra metric columns present."""
    columns = BASE_COLUMNS + [c for c in RGB_COLUMNS if any(c in r for r in rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _mean(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if r.get(key) is not None]
    return float(np.mean(values)) if values else math.nan


def _fmt(value: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return "inf" if math.isinf(value) else f"{value:.{digits}f}"


def group_rows(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def _same_scores(rows: list[dict], other: list[dict]) -> bool:
    """Whether two runs scored every image identically (bit-identical outputs, in practice)."""
    def scores(rs):
        return {r["image"]: (r["psnr"], r["ssim"], r.get("lpips")) for r in rs}
    return scores(rows) == scores(other)


def summary_table(rows: list[dict]) -> str:
    """Markdown table of one dataset: means per backend/config; with several configs, Δ to the 'off' row."""
    rgb = any("psnr_rgb" in r for r in rows)
    variants = any(r["config"] not in ("off", "-") for r in rows)
    header = ["backend", "config", "images", "PSNR-Y (dB) ↑", "SSIM-Y ↑", "LPIPS ↓"]
    header += ["PSNR-RGB ↑", "SSIM-RGB ↑"] if rgb else []
    header += ["ΔPSNR vs off", "ΔLPIPS vs off"] if variants else []
    header += ["s / image", "peak RSS MiB (Δ)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = group_rows(rows, "backend", "config")
    for (backend, config), group in groups.items():
        psnr, lp = _mean(group, "psnr"), _mean(group, "lpips")
        cells = [backend, config, str(len(group)), _fmt(psnr, 2), _fmt(_mean(group, "ssim"), 4), _fmt(lp, 4)]
        if rgb:
            cells += [_fmt(_mean(group, "psnr_rgb"), 2), _fmt(_mean(group, "ssim_rgb"), 4)]
        if variants:
            base = groups.get((backend, "off"))
            if base is not None and config != "off":
                cells += [f"{psnr - _mean(base, 'psnr'):+.2f}", f"{lp - _mean(base, 'lpips'):+.4f}"]
                if _same_scores(group, base):  # a stage the pipeline ignored: say so rather than imply a result
                    cells[1] += " (output identical to off)"
            else:
                cells += ["", ""]
        peaks = [r["peak_rss_mb"] for r in group if r.get("peak_rss_mb") is not None]
        deltas = [r["rss_delta_mb"] for r in group if r.get("rss_delta_mb") is not None]
        cells.append(_fmt(_mean(group, "seconds"), 3))
        cells.append(f"{max(peaks):.0f} (+{max(deltas):.0f})" if peaks else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(row: dict) -> str:
    return row["backend"] if row["config"] in ("off", "-") else f"{row['backend']} {row['config']}"


def plot_metric_bars(rows: list[dict], path: Path, title: str) -> None:
    """Mean PSNR / SSIM / LPIPS per backend (bars) per dataset (groups)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    labels = list(dict.fromkeys(_label(r) for r in rows))
    metrics = [("psnr", "PSNR-Y (dB) ↑"), ("ssim", "SSIM-Y ↑"), ("lpips", "LPIPS ↓")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    width = 0.8 / len(labels)
    x = np.arange(len(datasets))
    for ax, (key, name) in zip(axes, metrics):
        means = {lb: [_mean([r for r in rows if r["dataset"] == d and _label(r) == lb], key) for d in datasets]
                 for lb in labels}
        for i, label in enumerate(labels):
            heights = [v if math.isfinite(v) else math.nan for v in means[label]]  # inf PSNR: identical images
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, heights, width, label=label)
        ax.set_xticks(x, datasets)
        ax.set_title(name)
        finite = [v for vs in means.values() for v in vs if math.isfinite(v)]
        if finite:  # axes start near the data: from zero, differences of a few percent would not show
            lo, hi = min(finite), max(finite)
            pad = max((hi - lo) * 0.5, 0.03 * hi)
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
        ax.grid(axis="y", alpha=0.3)
    ncol = min(4, len(labels))
    legend_rows = math.ceil(len(labels) / ncol)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=ncol, fontsize="small")
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.02 + 0.06 * legend_rows, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_perception_distortion(rows: list[dict], path: Path, title: str) -> None:
    """PSNR (distortion) against LPIPS (perception) per image; large markers are the means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = dict(zip(dict.fromkeys(r["dataset"] for r in rows), "osD^vP*X"))
    colors = {lb: f"C{i}" for i, lb in enumerate(dict.fromkeys(_label(r) for r in rows))}
    for (label, dataset), group in group_rows([{**r, "label": _label(r)} for r in rows], "label", "dataset").items():
        pts = [(r["psnr"], r["lpips"]) for r in group if r.get("lpips") is not None and math.isfinite(r["psnr"])]
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=10, alpha=0.35, color=colors[label], marker=markers[dataset])
        ax.scatter(np.mean(xs), np.mean(ys), s=120, color=colors[label], marker=markers[dataset],
                   edgecolors="black", label=f"{label} · {dataset}")
    ax.set_xlabel("PSNR-Y (dB) → less distortion")
    ax.set_ylabel("LPIPS ↓ (lower = perceptually closer)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


STUDY_TITLES = {"backends": "Backends (post-processing off)",
                "ablation": "Ablation: one post-processing stage at a time",
                "paired": "Paired evaluation of existing outputs"}


def load_note(rows: list[dict]) -> str:
    """How busy the machine was while the timed rows were computed (timings depend on it)."""
    loads = [r["load_avg"] for r in rows if r.get("load_avg") is not None]
    if not loads:
        return ""
    return (f"1-min load average while computing: {min(loads):.1f}–{max(loads):.1f} "
            f"(median {np.median(loads):.1f}) on {os.cpu_count()} cores.")


def write_report(rows: list[dict], md_path: Path, command: str, lpips_info: str) -> None:
    """The summary markdown with one table per dataset and study, and its plots in plots/ beside it."""
    plots_dir = md_path.parent / "plots"
    out = [
        "# Super-resolution evaluation",
        "",
        "Generated by `evaluate.py`; every number below was measured by this command, run from the project "
        "root on the CPU (an interrupted run resumes from the per-image cache `results.jsonl` in `--out`):",
        "",
        "```",
        command,
        "```",
        "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores of which {cpu_threads()} usable by the run "
        f"(CPU affinity), Python {platform.python_version()}, "
        f"torch {torch.__version__}; report written {time.strftime('%Y-%m-%d %H:%M')}. {load_note(rows)}",
        f"- LR input: {LR_RESIZE}. SR output rounded to 8 bits before scoring.",
        f"- PSNR/SSIM on Y (BT.601, 16–235) after cropping {SCALE} px from every border; SSIM with an 11×11 "
        "Gaussian window (σ 1.5), as the MATLAB reference. LPIPS on the whole RGB image; " + lpips_info + ".",
        "- Published ×4 bicubic references (MATLAB imresize for both down- and upscaling): Set5 28.42 dB / 0.8104, "
        "Set14 26.00 dB / 0.7027. The `bicubic` backend upsamples with PyTorch bicubic (a = −0.75), so its "
        "numbers differ slightly.",
        "- s / image: wall time of the pipeline call (backend + post-processing). Peak RSS: sampled resident "
        "memory of the evaluating process during that call (includes the loaded models and LPIPS); Δ is the "
        "growth over the RSS at the start of the call.",
        "",
    ]
    for study, study_rows in group_rows(rows, "study").items():
        study = study[0]
        out += [f"## {STUDY_TITLES[study]}", ""]
        for (dataset,), ds_rows in group_rows(study_rows, "dataset").items():
            out += [f"### {dataset}", "", summary_table(ds_rows), ""]
        bars, scatter = f"{study}_metrics.png", f"{study}_perception_distortion.png"
        plot_metric_bars(study_rows, plots_dir / bars, STUDY_TITLES[study])
        plot_perception_distortion(study_rows, plots_dir / scatter, f"Perception–distortion: {STUDY_TITLES[study]}")
        out += [f"![mean metrics]({plots_dir.name}/{bars})", "",
                f"![perception-distortion]({plots_dir.name}/{scatter})", ""]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(out))


# ------------------------------------------------------------------------------------------------ CLI

def documented_command(script: str, argv: list[str]) -> str:
    """The shell command that reproduces this run, including a CPU pinning (the timings depend on it)."""
    command = " ".join(shlex.quote(a) for a in ["python", script, *argv])
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < (os.cpu_count() or 1):
        command = f"taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} {command}"
    return command


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
    p.add_argument("--hr", type=Path, help="paired mode: folder of HR images")
    p.add_argument("--sr", type=Path, help="paired mode: folder of SR results with the same file names")
    p.add_argument("--name", help="paired mode: label of the SR results (default: the SR folder name)")
    p.add_argument("--config", type=Path, help="base config (default: configs/sample-sd-turbo.yaml)")
    p.add_argument("--limit", type=int, help="only the first N images of each dataset (quick checks)")
    p.add_argument("--scale", type=int, default=SCALE, help="border crop; paired mode only, the rest is ×4")
    p.add_argument("--lpips-net", choices=["alex", "vgg"], default="alex")
    p.add_argument("--rgb", action="store_true", help="also report PSNR/SSIM on RGB")
    p.add_argument("--report", type=Path, help="also write the summary here (plots go to plots/ beside it)")
    args = p.parse_args(argv)
    if (args.hr is None) != (args.sr is None):
        p.error("paired mode needs both --hr and --sr")
    if args.hr is None and args.scale != SCALE:
        p.error(f"generated LR inputs are ×{SCALE}; --scale is for paired mode")
    return args


def backend_runs(args: argparse.Namespace, cfg: DictConfig) -> Iterable[tuple[str, str, dict, list[Path], str]]:
    """(backend, config name, overrides, datasets, study) for every requested run that can execute."""
    status = backend_status(cfg)
    wanted = [(b, "off", {}, args.datasets, "backends") for b in args.backends]
    if args.ablation:
        wanted += [(args.ablation_backend, name, ov, args.ablation_datasets, "ablation")
                   for name, ov in ABLATIONS.items()]
    for backend, name, overrides, datasets, study in wanted:
        avail = status.get(backend)
        if avail is None or not avail.ok:
            print(f"skipping {backend}: {avail.reason if avail else 'unknown backend'}", file=sys.stderr)
            continue
        yield backend, name, overrides, [resolve_dataset(d) for d in datasets], study


def main(argv: Optional[list[str]] = None) -> list[dict]:
    args = parse_args(argv)
    command = documented_command("evaluate.py", sys.argv[1:] if argv is None else argv)
    lpips = LPIPS(args.lpips_net)
    lpips_info = f"LPIPS {args.lpips_net} v0.1, backbone from {lpips.model.backbone_source.split(' (')[0]}"
    scorer = Scorer(lpips, args.scale, args.rgb)
    cache = ResultCache(args.out / "results.jsonl")
    rows: list[dict] = []
    if args.hr is not None:
        rows += run_paired(args.hr, args.sr, args.name or args.sr.name, scorer, cache)
    else:
        base = load_config(args.config)
        for backend, name, overrides, datasets, study in backend_runs(args, base):
            cfg = with_overrides(base, {**BASE_OVERRIDES, **overrides})
            for dataset in datasets:
                images = list_images(dataset)[: args.limit]
                rows += run_backend(backend, name, cfg, dataset, images, scorer, cache, study)
    if not rows:
        raise SystemExit("nothing was evaluated (no available backend or no images)")
    write_csv(rows, args.out / "metrics.csv")
    write_report(rows, args.out / "summary.md", command, lpips_info)
    if args.report:
        write_report(rows, args.report, command, lpips_info)
    for study, study_rows in group_rows(rows, "study").items():
        for (dataset,), ds_rows in group_rows(study_rows, "dataset").items():
            print(f"\n{STUDY_TITLES[study[0]]} — {dataset}\n{summary_table(ds_rows)}")
    print(f"\nwrote {args.out / 'metrics.csv'}, {args.out / 'summary.md'}, {args.out / 'plots'}")
    return rows


if __name__ == "__main__":
    main()
