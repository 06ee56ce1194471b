"""Speed and memory per backend and input size: the bare model, the CLI path (fixed and smart chopping)
and the command line as a new process; benchmark.py documents what each column measures."""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datapipe.image_io import read_image, write_image
from utils.backends import backend_status, load_backend
from utils.config import PROJECT_ROOT, load_config, with_overrides
from utils.backends.ncnn_net import load_net
from utils.backends.rrdbnet import packaged_model_files
from utils.devices import cpu_threads, thread_count
from utils.evaluation.datasets import DATASETS_ROOT
from utils.evaluation.metrics import PeakRSS
from utils.evaluation.runner import BASE_OVERRIDES
from utils.pipeline.chain import to_tensor, upscale_image
from utils.settings import RunSettings
from utils.tiling.smart_chopping import smart_grid

SOURCE_IMAGE = DATASETS_ROOT / "Set5" / "baby.png"  # 512×512, so every size is a downscale of real content


@dataclass
class Measurement:
    seconds: list[float] = field(default_factory=list)
    stages: dict[str, list[float]] = field(default_factory=dict)
    peak_mb: float = 0.0
    delta_mb: float = 0.0

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    def stage(self, name: str) -> float:
        return statistics.median(self.stages[name])


def measure(fns: dict[str, Callable[[], Optional[dict]]], repeats: int,
            unsampled: tuple[str, ...] = ()) -> dict[str, Measurement]:
    """Run every function ``repeats`` times, round-robin, so that the variants being compared see the
    same background load on a shared machine; a dict a function returns is recorded as stage values.
    Functions named in ``unsampled`` run without the memory sampler: they wait on a child process,
    and a sampling thread in the parent would steal CPU from the child's worker threads."""
    results = {name: Measurement() for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            result = results[name]
            with (nullcontext(PeakRSS()) if name in unsampled else PeakRSS()) as mem:
                start = time.perf_counter()
                stages = fn()
                result.seconds.append(time.perf_counter() - start)
            for stage, value in (stages if isinstance(stages, dict) else {}).items():
                result.stages.setdefault(stage, []).append(value)
            result.peak_mb = max(result.peak_mb, mem.peak_mb)
            result.delta_mb = max(result.delta_mb, mem.delta_mb)
    return results


def cli_path(src: Path, dst: Path, settings: RunSettings, backend) -> dict[str, float]:
    """What utils.batch.runner.process_file does (read → upscale → write), timed per stage; "patches" is the
    number of patches the backend actually ran (its progress total), which shows whether a chopping
    setting took effect."""
    patches = []
    t0 = time.perf_counter()
    img = read_image(src, max_pixels=settings.max_input_pixels)
    t1 = time.perf_counter()
    result, _ = upscale_image(img, backend, settings, progress=lambda done, total: patches.append(total))
    t2 = time.perf_counter()
    write_image(dst, result, quality=settings.quality)
    return {"read": t1 - t0, "upscale": t2 - t1, "write": time.perf_counter() - t2,
            "patches": patches[-1] if patches else 0}


def cli_process(src: Path, dst: Path, backend_name: str) -> None:
    """The command line as a user runs it, default settings, in a fresh process."""
    subprocess.run([sys.executable, str(PROJECT_ROOT / "inference_invsr.py"), "-i", str(src), "-o", str(dst),
                    "--backend", backend_name, "--overwrite"], check=True, capture_output=True)


def source_image(size: int) -> np.ndarray:
    with Image.open(SOURCE_IMAGE) as im:
        return np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))


def raw_forward(backend) -> Optional[Callable[[torch.Tensor], object]]:
    """The bare model call on a 1×3×h×w tensor, or None when the backend has no separable model."""
    if backend.name == "realesrgan":  # ncnn, whatever runtime the backend uses: the fixed yardstick
        net = load_net(*packaged_model_files(), thread_count())
        return lambda x: net(x[0].numpy())
    if backend.name == "bicubic":
        return lambda x: F.interpolate(x, scale_factor=backend.scale, mode="bicubic", align_corners=False)
    return None


def smart_grid_size(backend_name: str, cfg, lr: torch.Tensor) -> Optional[int]:
    """Patches utils.tiling.smart_chopping.smart_grid plans for this input at the backend's tile size."""
    section = cfg.get(backend_name)
    if section is None or "tile_size" not in section:
        return None
    pp = cfg.postprocess
    return len(smart_grid(lr, section.tile_size, pp.min_overlap, pp.max_overlap))


def fmt_row(cells: list) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def run_benchmark(backends: list[str], sizes: list[int], repeats: int, repeats_large: int, large: int,
                  config: Optional[Path], out: Path, command: str) -> str:
    """Measure every available backend at every size, write the markdown report to ``out`` and return it.
    Sizes at or above ``large`` get ``repeats_large`` repeats; ``command`` is recorded as how to rerun it."""
    base = load_config(config)
    cfg = with_overrides(base, BASE_OVERRIDES)
    smart_cfg = with_overrides(base, {**BASE_OVERRIDES, "postprocess.smart_chopping": True})
    status = backend_status(cfg)
    load_start = os.getloadavg()[0]
    sections = []
    tmp = Path(tempfile.mkdtemp(prefix="srbench-"))
    for name in backends:
        if not status.get(name) or not status[name].ok:
            print(f"skipping {name}: {status[name].reason if name in status else 'unknown backend'}", file=sys.stderr)
            continue
        backend = load_backend(name, cfg)
        settings, smart = RunSettings.from_config(cfg, name), RunSettings.from_config(smart_cfg, name)
        raw = raw_forward(backend)
        rows, chop_rows = [], []
        for size in sizes:
            runs = repeats if size < large else repeats_large
            img = source_image(size)
            lr = to_tensor(img.astype(np.float32) / 255.0)
            src = tmp / f"in_{size}.png"
            Image.fromarray(img).save(src)
            if size == sizes[0]:  # first calls pay one-off initialisation; keep it out of the medians
                cli_path(src, tmp / "warmup.png", settings, backend)
                if raw is not None:
                    raw(lr)
            fns = {"pipeline": lambda: cli_path(src, tmp / f"out_{size}.png", settings, backend),
                   "smart": lambda: cli_path(src, tmp / f"smart_{size}.png", smart, backend),
                   "cli": lambda: cli_process(src, tmp / f"cli_{size}.png", name)}
            if raw is not None:
                fns["raw"] = lambda: raw(lr)
            measured = measure(fns, runs, unsampled=("cli",))
            m_raw, m_pipe, m_smart, m_cli = (measured.get("raw"), measured["pipeline"], measured["smart"],
                                             measured["cli"])
            mp = size * size / 1e6
            overhead = f"{(m_pipe.median / m_raw.median - 1) * 100:+.0f} %" if m_raw else "–"
            cli_ratio = f"{m_cli.median / m_raw.median:.2f}×" if m_raw else "–"
            rows.append([f"{size}²", runs, f"{m_raw.median:.3f}" if m_raw else "–", f"{m_pipe.median:.3f}",
                         overhead, f"{m_cli.median:.3f}", cli_ratio,
                         " / ".join(f"{m_pipe.stage(k):.3f}" for k in ("read", "upscale", "write")),
                         f"{m_raw.median / mp:.1f}" if m_raw else "–", f"{m_pipe.median / mp:.1f}",
                         f"{m_raw.delta_mb:.0f}" if m_raw else "–", f"{m_pipe.delta_mb:.0f}",
                         f"{m_pipe.peak_mb:.0f}"])
            print(f"{name} {size}²: raw {rows[-1][2]} s, pipeline {rows[-1][3]} s ({overhead}; read/upscale/write "
                  f"{rows[-1][7]} s), CLI process {rows[-1][5]} s ({cli_ratio} of raw), {rows[-1][9]} s/MP",
                  flush=True)
            chop_rows.append([f"{size}²", int(m_pipe.stage("patches")), int(m_smart.stage("patches")),
                              smart_grid_size(name, smart_cfg, lr), f"{m_pipe.median:.3f}", f"{m_smart.median:.3f}",
                              f"{m_smart.median / m_pipe.median:.2f}×", f"{m_smart.delta_mb:.0f}"])
            print(f"{name} {size}²: smart chopping {m_smart.median:.3f} s ({chop_rows[-1][6]} of fixed)", flush=True)
        lines = [f"### {name} ({backend.device})", "",
                 fmt_row(["input", "repeats", "raw s", "pipeline s", "pipeline overhead", "CLI process s",
                          "CLI / raw", "read / upscale / write s", "raw s/MP", "pipeline s/MP", "raw peak RSS Δ MiB",
                          "pipeline peak RSS Δ MiB", "pipeline peak RSS MiB"]),
                 "|" + "---|" * 13]
        lines += [fmt_row(r) for r in rows]
        if chop_rows:
            lines += ["", f"Fixed vs smart chopping ({name}, CLI path; patches of {cfg[name].tile_size} input px):",
                      "", fmt_row(["input", "patches run (fixed)", "patches run (smart)", "smart_grid plans",
                                   "fixed s", "smart s", "smart / fixed", "smart peak RSS Δ MiB"]), "|" + "---|" * 8]
            lines += [fmt_row(r) for r in chop_rows]
        sections.append("\n".join(lines))
    load_end = os.getloadavg()[0]
    header = [
        "# Benchmarks", "",
        "Generated by `benchmark.py` with:", "", "```", command, "```", "",
        f"- {platform.machine()}, {os.cpu_count()} CPU cores ({cpu_threads()} usable by this run), "
        f"Python {platform.python_version()}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M')}.",
        f"- 1-min load average at start / end: {load_start:.1f} / {load_end:.1f} (the machine is shared; "
        "timings scale with how busy it was).",
        "- Input: Set5 `baby.png` resized to each size. Times are medians over the repeats, after one warm-up call; "
        "raw, pipeline and smart runs alternate, so each comparison sees the same background load.",
        "- raw: the model alone on the whole input (Real-ESRGAN: one direct ncnn call; bicubic: one "
        "`F.interpolate`). pipeline: the CLI path, read PNG → `utils.pipeline.chain` (chopping, post-processing off) "
        "→ write PNG; overhead is pipeline / raw − 1 (chopping overlap, blending, colour conversion, PNG I/O), "
        "split into its read / upscale (`upscale_image`: pipeline incl. chopping) / write (encode + fsync) stages.",
        "- s/MP: seconds per input megapixel; a constant value means time grows linearly with the area.",
        "- Peak RSS Δ: growth of the sampled resident memory over its value when the call started; peak RSS: "
        "the absolute peak of the process (includes the loaded models).",
        "- CLI process: `inference_invsr.py` on the same PNG with default settings (colour fix included) as a "
        "new process, so interpreter start-up, imports and model loading count; CLI / raw is the end-to-end "
        "cost of the command line relative to one bare model call.",
        "- Smart chopping: the CLI path with `postprocess.smart_chopping: true`. \"patches run\" counts the "
        "patches the backend really processed; if it equals the fixed count while `smart_grid` plans a different "
        "number, the pipeline did not apply the setting.",
        "",
    ]
    report = "\n".join(header).rstrip() + "\n\n" + "\n\n".join(sections) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(f"\n{report}\nwrote {out}")
    return report
