"""Every backend on every runtime and precision this machine can run, in one interleaved run
(``benchmark.py --runtimes``): seconds, ratio to the fastest float32 of ncnn/torch, PSNR against that
float32 reference, memory, and each runtime's start-up as a new process."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from PIL import Image

from utils.backends import load_backend
from utils.config import PROJECT_ROOT, load_config, with_overrides
from utils.devices import cpu_model
from utils.evaluation.benchmark import fmt_row, measure, source_image
from utils.evaluation.metrics import PeakRSS
from utils.evaluation.runner import BASE_OVERRIDES
from utils.pipeline.chain import to_tensor
from utils.settings import RunSettings
from utils.runtimes import ov_core
from utils.runtimes.policy import RuntimeRefused, choose
from utils.settings import SPECS

REFERENCE_RUNTIMES = ("ncnn", "torch")  # float32 rows the others are compared with
STARTUP_SIZE = 32  # one tile: process start, imports, model read from the cache, one forward, write


def variants(backend: str) -> list[tuple[str, str]]:
    """(runtime, precision) pairs that run ``backend`` here, float32 references first."""
    pairs = []
    supported = SPECS[backend].runtimes
    for runtime, precisions in supported.items():
        for precision in precisions:
            try:
                choose(backend, supported, runtime, precision)
            except RuntimeRefused:
                continue
            pairs.append((runtime, precision))
    return sorted(pairs, key=lambda p: (p != ("ncnn", "float32"), p != ("torch", "float32")))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def startup_seconds(backend: str, runtime: str, precision: str, src: Path, dst: Path, extra: list[str]) -> float:
    """Wall time of the CLI as a new process on a one-tile input (model read from the cache)."""
    start = time.perf_counter()
    res = subprocess.run([sys.executable, str(PROJECT_ROOT / "inference_invsr.py"), "-i", str(src), "-o", str(dst),
                          "--backend", backend, "--runtime", runtime, "--precision", precision, "--overwrite", *extra],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"the CLI failed ({backend} {runtime} {precision}): {res.stderr[-2000:]}")
    return time.perf_counter() - start


def run_runtime_benchmark(backends: list[str], size: int, repeats: int, config: Optional[Path],
                          invsr_paths: dict[str, str], command: str) -> str:
    """Measure and return the markdown section (also printed)."""
    overrides = {**BASE_OVERRIDES, **{k: v for k, v in invsr_paths.items() if v}}
    base = with_overrides(load_config(config), overrides)
    tmp = Path(tempfile.mkdtemp(prefix="srruntimes-"))
    lr = to_tensor(source_image(size).astype(np.float32) / 255.0)
    small = tmp / "startup.png"
    Image.fromarray(source_image(STARTUP_SIZE)).save(small)
    cli_extra = [arg for key, flag in (("sd_pipe.params.pretrained_model_name_or_path", "--sd_path"),
                                       ("model_start.ckpt_path", "--started_ckpt_path"))
                 if invsr_paths.get(key) for arg in (flag, invsr_paths[key])]
    rows_by_backend = {}
    load_start = os.getloadavg()[0]
    for name in backends:
        calls, loads = {}, {}
        for runtime, precision in variants(name):
            cfg = with_overrides(base, {"runtime": runtime, "precision": precision})
            with PeakRSS() as mem:
                backend = load_backend(name, cfg)
            settings = RunSettings.from_config(cfg, name)
            loads[runtime, precision] = mem.peak_mb - mem.base_mb
            calls[f"{runtime} {precision}"] = lambda b=backend, s=settings: b.upscale(lr, s)
            print(f"{name}: loaded {runtime} {precision}", file=sys.stderr, flush=True)
        outputs = {key: fn() for key, fn in calls.items()}  # warm-up, and the outputs compared
        measured = measure(calls, repeats)
        references = [k for k in calls if k.split()[0] in REFERENCE_RUNTIMES and k.endswith("float32")]
        fastest_ref = min(references, key=lambda k: measured[k].median)
        rows = []
        for key in calls:
            runtime, precision = key.split()
            m = measured[key]
            rows.append([name, runtime, precision, f"{m.median:.2f}", f"{m.median / measured[fastest_ref].median:.2f}×",
                         "ref" if key == references[0] else f"{psnr(outputs[key], outputs[references[0]]):.1f}",
                         f"{loads[runtime, precision]:.0f}", f"{m.delta_mb:.0f}"])
            print(fmt_row(rows[-1]), file=sys.stderr, flush=True)
        for row in rows:  # after the timed runs: a new process competes for the CPU
            row.append(f"{startup_seconds(name, row[1], row[2], small, tmp / 'startup_out.png', cli_extra):.1f}")
        rows_by_backend[name] = (rows, fastest_ref, references[0])
    lines = [
        "## Runtimes and precisions", "",
        "Generated by `benchmark.py --runtimes` with:", "", "```", command, "```", "",
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores; OpenVINO {ov_core.version()} CPU plugin "
        f"`OPTIMIZATION_CAPABILITIES`: {', '.join(ov_core.capabilities()) or 'none (not installed)'}; "
        f"torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}.",
        f"- 1-min load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f} (a shared machine: the "
        "variants run interleaved, round-robin, so the ratios compare like with like; the seconds drift with the load).",
        f"- Input: Set5 `baby.png` at {size}², ×4, through the backend's tiling (`Backend.upscale`), median of "
        f"{repeats} after a warm-up call. ratio: to the fastest float32 row of ncnn/torch. PSNR: RGB, against the "
        "first float32 reference row. load RSS Δ: memory the loaded model added; run RSS Δ: peak growth during a "
        "call. start-up: the CLI as a new process on a "
        f"{STARTUP_SIZE}² input (one tile; imports, model read from the cache, one forward, PNG written).",
        "",
        fmt_row(["backend", "runtime", "precision", "s", "ratio", "PSNR dB", "load RSS Δ MiB", "run RSS Δ MiB",
                 "start-up s"]),
        "|" + "---|" * 9,
    ]
    for rows, _, _ in rows_by_backend.values():
        lines += [fmt_row(r) for r in rows]
    report = "\n".join(lines) + "\n"
    print(report)
    return report


def replace_section(doc: Path, section: str) -> None:
    """Put ``section`` (starting with its "## " heading) into ``doc``, replacing the one of that heading."""
    heading = section.splitlines()[0]
    text = doc.read_text() if doc.is_file() else ""
    # The whole line: a longer heading that starts the same (another machine's table) is another section.
    found = re.search(rf"^{re.escape(heading)}$", text, re.MULTILINE)
    if found:
        following = text.find("\n## ", found.end())
        text = text[:found.start()] + section.rstrip() + "\n" + (text[following:] if following >= 0 else "")
    else:
        text = text.rstrip() + "\n\n" + section
    doc.write_text(text)
