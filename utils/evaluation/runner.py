"""Run backends (or existing outputs) over benchmark datasets and score them, resuming from a cache.

The LR input of every HR image is made here (see utils.evaluation.datasets), upscaled through the same
pipeline as the CLI, rounded to 8 bits and scored; each image's result is appended to results.jsonl so
an interrupted run resumes where it stopped. Existing outputs are scored against their HR images
(paired mode) or, without ground truth, by NIQE alone (no-reference mode).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from datapipe.image_io import list_images
from utils.backends import BACKENDS, backend_status, load_backend
from utils.config import load_config, with_overrides
from utils.evaluation.datasets import SCALE, align_hr, load_rgb, make_lr, match_pairs, modcrop, resolve_dataset
from utils.evaluation.metrics import LPIPS, PeakRSS, score_pair
from utils.evaluation.niqe import ImageTooSmall, PristineModel, load_params, niqe
from utils.evaluation.report import STUDY_TITLES, group_rows, summary_table, write_csv, write_report
from utils.pipeline.chain import run_pipeline, to_array, to_tensor
from utils.settings import RunSettings

# Every backend the project has, the baseline first (unavailable ones, e.g. InvSR without weights, are skipped).
DEFAULT_BACKENDS = ("bicubic", *(name for name in BACKENDS if name != "bicubic"))

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


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1×3×H×W float in [0, 1] -> H×W×3 uint8, as the image would be saved."""
    return (np.clip(to_array(x), 0, 1) * 255.0).round().astype(np.uint8)


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

    def get_complete(self, key: str) -> Optional[dict]:
        """The entry of ``key`` if it holds every metric computed today (entries written before NIQE was
        added lack ``niqe``, so those images are scored again)."""
        entry = self.get(key)
        return entry if entry is not None and "niqe" in entry else None

    def put(self, key: str, result: dict) -> dict:
        entry = {"key": key, **result}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as fh:
            fh.write(json.dumps(entry) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.entries[key] = entry
        return entry


@dataclass
class Scorer:
    """Metrics of one H×W×3 uint8 output: against its HR image when there is one, and NIQE always."""
    lpips: Optional[LPIPS]  # None in no-reference mode
    niqe_model: PristineModel
    scale: int  # border crop of every metric
    rgb: bool

    def __call__(self, sr: np.ndarray, hr: Optional[np.ndarray] = None) -> dict:
        scores = {} if hr is None else score_pair(sr, hr, crop=self.scale, lpips=self.lpips, rgb=self.rgb)
        return {**scores, "niqe": self.niqe(sr)}

    def niqe(self, sr: np.ndarray) -> Optional[float]:
        """NIQE of the output; None (said on stderr) when it holds fewer than two 96×96 blocks."""
        try:
            return niqe(sr, crop_border=self.scale, model=self.niqe_model)
        except ImageTooSmall as err:
            tqdm.write(f"NIQE left blank: {err}", file=sys.stderr)
            return None


def run_backend(backend_name: str, config_name: str, cfg: DictConfig, dataset: Path, images: list[Path],
                scorer: Scorer, cache: ResultCache, study: str) -> list[dict]:
    """Upscale the LR version of every HR image with one backend/config; cached images are not redone."""
    digest = config_digest(cfg)
    rows, backend = [], None
    bar = tqdm(images, desc=f"{dataset.name}/{backend_name}/{config_name}", unit="img", leave=False)
    for path in bar:
        key = "|".join([dataset.name, path.name, backend_name, digest, scorer.lpips.net, str(scorer.rgb)])
        entry = cache.get_complete(key)
        if entry is None:
            if backend is None:  # loaded only when something is left to compute
                backend = load_backend(backend_name, cfg)
                settings = RunSettings.from_config(cfg, backend_name)
            hr = modcrop(load_rgb(path), scorer.scale)
            lr = make_lr(hr, scorer.scale)
            lr_t = to_tensor(lr.astype(np.float32) / 255.0)
            with PeakRSS() as mem:
                start = time.perf_counter()
                sr_t, info = run_pipeline(lr_t, backend, settings)
                seconds = time.perf_counter() - start
            entry = cache.put(key, {
                "image": path.name, "dataset": dataset.name, "backend": backend_name,
                **scorer(to_uint8(sr_t), hr), "seconds": seconds, "peak_rss_mb": mem.peak_mb,
                "rss_delta_mb": mem.delta_mb, "load_avg": os.getloadavg()[0], "device": info.device,
                "hr_width": hr.shape[1], "hr_height": hr.shape[0], "lr_width": lr.shape[1], "lr_height": lr.shape[0],
            })
        rows.append({**entry, "config": config_name, "study": study})
    return rows


def run_paired(hr_dir: Path, sr_dir: Path, label: str, scorer: Scorer, cache: ResultCache) -> list[dict]:
    """Score existing SR files against their HR images; a changed SR file (mtime) is scored again."""
    rows = []
    for hr_path, sr_path in tqdm(match_pairs(hr_dir, sr_dir), desc=f"{hr_dir.name}/{label}", unit="img",
                                 leave=False):
        key = "|".join(["paired", str(hr_path.resolve()), str(sr_path.resolve()), str(sr_path.stat().st_mtime_ns),
                        scorer.lpips.net, str(scorer.rgb), str(scorer.scale)])
        entry = cache.get_complete(key)
        if entry is None:
            sr = load_rgb(sr_path)
            hr = align_hr(load_rgb(hr_path), sr, scorer.scale)
            entry = cache.put(key, {"image": hr_path.name, "dataset": hr_dir.name, "backend": label,
                                    **scorer(sr, hr), "hr_width": hr.shape[1], "hr_height": hr.shape[0]})
        rows.append({**entry, "config": "-", "study": "paired"})
    return rows


def run_no_reference(sr_dir: Path, label: str, scorer: Scorer, cache: ResultCache) -> list[dict]:
    """NIQE of every image in ``sr_dir`` (no ground truth); a changed file (mtime) is scored again."""
    rows = []
    for path in tqdm(list_images(sr_dir), desc=f"{sr_dir.name}/{label}", unit="img", leave=False):
        key = "|".join(["no-reference", str(path.resolve()), str(path.stat().st_mtime_ns), str(scorer.scale)])
        entry = cache.get_complete(key)
        if entry is None:
            entry = cache.put(key, {"image": path.name, "dataset": sr_dir.name, "backend": label,
                                    **scorer(load_rgb(path))})
        rows.append({**entry, "config": "-", "study": "no-reference"})
    return rows


@dataclass(frozen=True)
class EvaluationRequest:
    """What to evaluate and where the results go; one field per option of evaluate.py.

    Paired mode (``hr`` and ``sr`` set) scores existing outputs, no-reference mode (``sr`` alone) gives
    their NIQE; otherwise ``backends`` run on ``datasets`` with post-processing off, plus ABLATIONS of
    ``ablation_backend`` when ``ablation``.
    """
    out: Path
    datasets: Sequence[str]
    backends: Sequence[str]
    ablation: bool
    ablation_datasets: Sequence[str]
    ablation_backend: str
    hr: Optional[Path]
    sr: Optional[Path]
    name: Optional[str]
    config: Optional[Path]
    limit: Optional[int]
    scale: int
    lpips_net: str
    rgb: bool
    report: Optional[Path]


def planned_runs(req: EvaluationRequest, cfg: DictConfig) -> Iterable[tuple[str, str, dict, list[Path], str]]:
    """(backend, config name, overrides, datasets, study) for every requested run that can execute."""
    status = backend_status(cfg)
    wanted = [(b, "off", {}, req.datasets, "backends") for b in req.backends]
    if req.ablation:
        wanted += [(req.ablation_backend, name, ov, req.ablation_datasets, "ablation")
                   for name, ov in ABLATIONS.items()]
    for backend, name, overrides, datasets, study in wanted:
        avail = status.get(backend)
        if avail is None or not avail.ok:
            print(f"skipping {backend}: {avail.reason if avail else 'unknown backend'}", file=sys.stderr)
            continue
        yield backend, name, overrides, [resolve_dataset(d) for d in datasets], study


def run_benchmarks(req: EvaluationRequest, scorer: Scorer, cache: ResultCache) -> list[dict]:
    """Every planned backend/config on its datasets, one overall progress bar over the runs."""
    base = load_config(req.config)
    jobs = [(backend, name, with_overrides(base, {**BASE_OVERRIDES, **overrides}), dataset, study)
            for backend, name, overrides, datasets, study in planned_runs(req, base) for dataset in datasets]
    rows: list[dict] = []
    for backend, name, cfg, dataset, study in tqdm(jobs, desc="evaluation", unit="run"):
        images = list_images(dataset)[: req.limit]
        rows += run_backend(backend, name, cfg, dataset, images, scorer, cache, study)
    return rows


def run_evaluation(req: EvaluationRequest, command: str) -> list[dict]:
    """Score everything ``req`` asks for, write metrics.csv, summary.md and plots/ into ``req.out`` (and
    the summary to ``req.report``), print the tables; ``command`` is recorded as how to reproduce it."""
    no_reference = req.sr is not None and req.hr is None
    # Loaded first: a missing parameter file fails here, naming its fetch command, not after a backend run.
    niqe_model = load_params()
    lpips = None if no_reference else LPIPS(req.lpips_net)
    lpips_info = ("not computed (no reference images)" if lpips is None else
                  f"LPIPS {req.lpips_net} v0.1, backbone from {lpips.model.backbone_source.split(' (')[0]}")
    scorer = Scorer(lpips, niqe_model, req.scale, req.rgb)
    cache = ResultCache(req.out / "results.jsonl")
    if no_reference:
        rows = run_no_reference(req.sr, req.name or req.sr.name, scorer, cache)
    elif req.hr is not None:
        rows = run_paired(req.hr, req.sr, req.name or req.sr.name, scorer, cache)
    else:
        rows = run_benchmarks(req, scorer, cache)
    if not rows:
        raise SystemExit("nothing was evaluated (no available backend or no images)")
    write_csv(rows, req.out / "metrics.csv")
    write_report(rows, req.out / "summary.md", command, lpips_info)
    if req.report:
        write_report(rows, req.report, command, lpips_info)
    for study, study_rows in group_rows(rows, "study").items():
        for (dataset,), ds_rows in group_rows(study_rows, "dataset").items():
            print(f"\n{STUDY_TITLES[study[0]]} — {dataset}\n{summary_table(ds_rows)}")
    print(f"\nwrote {req.out / 'metrics.csv'}, {req.out / 'summary.md'}, {req.out / 'plots'}")
    return rows
