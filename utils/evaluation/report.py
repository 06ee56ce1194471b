"""Evaluation results as files: the per-image CSV, the markdown summary with its tables and plots, and
the command line that reproduces a run."""
from __future__ import annotations

import csv
import math
import os
import platform
import shlex
import time
from pathlib import Path

import numpy as np
import torch

from utils.devices import cpu_threads
from utils.evaluation.datasets import LR_RESIZE, SCALE

BASE_COLUMNS = ["image", "dataset", "backend", "config", "psnr", "ssim", "lpips", "niqe", "seconds",
                "peak_rss_mb", "rss_delta_mb", "load_avg", "device", "hr_width", "hr_height", "lr_width", "lr_height"]
# Table and plot columns: (row key, heading, decimals), in display order.
METRICS = [("psnr", "PSNR-Y (dB) ↑", 2), ("ssim", "SSIM-Y ↑", 4), ("lpips", "LPIPS ↓", 4), ("niqe", "NIQE ↓", 3)]
RGB_METRICS = [("psnr_rgb", "PSNR-RGB ↑", 2), ("ssim_rgb", "SSIM-RGB ↑", 4)]
RGB_COLUMNS = [key for key, _, _ in RGB_METRICS]
DELTAS = {"psnr": "ΔPSNR vs off", "lpips": "ΔLPIPS vs off", "niqe": "ΔNIQE vs off"}  # the ablation's columns
# Perception axes of the perception–distortion plots (PSNR is the distortion axis): key -> (axis label, file suffix).
PERCEPTION = {"lpips": ("LPIPS ↓ (lower = perceptually closer)", ""),
              "niqe": ("NIQE ↓ (lower = more natural, no reference)", "_niqe")}


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


def present(rows: list[dict], metrics: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """The ``metrics`` that at least one row has a value for (a no-reference run has NIQE only)."""
    return [m for m in metrics if any(r.get(m[0]) is not None for r in rows)]


def group_rows(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    """Rows grouped by ``keys``, in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def _same_scores(rows: list[dict], other: list[dict]) -> bool:
    """Whether two runs scored every image identically (bit-identical outputs, in practice)."""
    def scores(rs):
        return {r["image"]: tuple(r.get(key) for key, _, _ in METRICS) for r in rs}
    return scores(rows) == scores(other)


def summary_table(rows: list[dict]) -> str:
    """Markdown table of one dataset: means per backend/config of the metrics present; with several
    configs, Δ to the 'off' row."""
    metrics = present(rows, METRICS + RGB_METRICS)
    variants = any(r["config"] not in ("off", "-") for r in rows)
    delta_metrics = [m for m in metrics if m[0] in DELTAS] if variants else []
    header = ["backend", "config", "images", *(name for _, name, _ in metrics)]
    header += [DELTAS[key] for key, _, _ in delta_metrics]
    header += ["s / image", "peak RSS MiB (Δ)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    groups = group_rows(rows, "backend", "config")
    for (backend, config), group in groups.items():
        cells = [backend, config, str(len(group)), *(_fmt(_mean(group, key), digits) for key, _, digits in metrics)]
        base = groups.get((backend, "off"))
        if delta_metrics and base is not None and config != "off":
            cells += [f"{_mean(group, key) - _mean(base, key):+.{digits}f}" for key, _, digits in delta_metrics]
            if _same_scores(group, base):  # a stage the pipeline ignored: say so rather than imply a result
                cells[1] += " (output identical to off)"
        else:
            cells += [""] * len(delta_metrics)
        peaks = [r["peak_rss_mb"] for r in group if r.get("peak_rss_mb") is not None]
        deltas = [r["rss_delta_mb"] for r in group if r.get("rss_delta_mb") is not None]
        cells.append(_fmt(_mean(group, "seconds"), 3))
        cells.append(f"{max(peaks):.0f} (+{max(deltas):.0f})" if peaks else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(row: dict) -> str:
    return row["backend"] if row["config"] in ("off", "-") else f"{row['backend']} {row['config']}"


def plot_metric_bars(rows: list[dict], path: Path, title: str) -> bool:
    """Mean PSNR / SSIM / LPIPS / NIQE (those present) per backend (bars) per dataset (groups).
    Returns whether anything was plotted (no file otherwise)."""
    metrics = present(rows, METRICS)
    if not metrics:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    labels = list(dict.fromkeys(_label(r) for r in rows))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 5), squeeze=False)
    axes = axes[0]
    width = 0.8 / len(labels)
    x = np.arange(len(datasets))
    for ax, (key, name, _) in zip(axes, metrics):
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
    return True


def _pd_points(rows: list[dict], perception: str) -> list[tuple[float, float]]:
    """(PSNR, perception metric) of the rows having both, identical images (PSNR inf) left out."""
    return [(r["psnr"], r[perception]) for r in rows
            if r.get("psnr") is not None and math.isfinite(r["psnr"]) and r.get(perception) is not None]


def plot_perception_distortion(rows: list[dict], path: Path, title: str, perception: str = "lpips") -> bool:
    """PSNR (distortion) against ``perception`` (a PERCEPTION key) per image; large markers are the means.
    Returns whether anything was plotted (no file otherwise)."""
    if not _pd_points(rows, perception):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    markers = dict(zip(dict.fromkeys(r["dataset"] for r in rows), "osD^vP*X"))
    colors = {lb: f"C{i}" for i, lb in enumerate(dict.fromkeys(_label(r) for r in rows))}
    for (label, dataset), group in group_rows([{**r, "label": _label(r)} for r in rows], "label", "dataset").items():
        pts = _pd_points(group, perception)
        if not pts:
            continue
        xs, ys = zip(*pts)
        ax.scatter(xs, ys, s=10, alpha=0.35, color=colors[label], marker=markers[dataset])
        ax.scatter(np.mean(xs), np.mean(ys), s=120, color=colors[label], marker=markers[dataset],
                   edgecolors="black", label=f"{label} · {dataset}")
    ax.set_xlabel("PSNR-Y (dB) → less distortion")
    ax.set_ylabel(PERCEPTION[perception][0])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


STUDY_TITLES = {"backends": "Backends (post-processing off)",
                "ablation": "Ablation: one post-processing stage at a time",
                "paired": "Paired evaluation of existing outputs",
                "no-reference": "No-reference evaluation of existing outputs (NIQE only)"}


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
        "- NIQE (no reference, Mittal et al. 2013) of the SR output: Y rounded to integers, the same border crop, "
        "96×96 blocks, the LIVE pristine model of the MATLAB release (as shipped in BasicSR 1.4.2), MATLAB's "
        "antialiased bicubic for the half scale; reproduces MATLAB's niqe.m (Set14 baboon: 5.7296). Blank for "
        "images under two blocks.",
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
        bars = f"{study}_metrics.png"
        if plot_metric_bars(study_rows, plots_dir / bars, STUDY_TITLES[study]):
            out += [f"![mean metrics]({plots_dir.name}/{bars})", ""]
        for perception, (_, suffix) in PERCEPTION.items():
            scatter = f"{study}_perception_distortion{suffix}.png"
            if plot_perception_distortion(study_rows, plots_dir / scatter,
                                          f"Perception–distortion: {STUDY_TITLES[study]}", perception):
                out += [f"![perception-distortion, {perception}]({plots_dir.name}/{scatter})", ""]
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text("\n".join(out))


def documented_command(script: str, argv: list[str]) -> str:
    """The shell command that reproduces this run, including a CPU pinning (the timings depend on it)."""
    command = " ".join(shlex.quote(a) for a in ["python", script, *argv])
    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) < (os.cpu_count() or 1):
        command = f"taskset -c {','.join(map(str, sorted(os.sched_getaffinity(0))))} {command}"
    return command
