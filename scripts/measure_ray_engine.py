#!/usr/bin/env python
"""The Ray engine's cost against the local engine on a folder of small images.

    .venv/bin/python scripts/measure_ray_engine.py [--count 16] [--size 48] [--backends bicubic realesrgan]

For each backend: the local engine (model load, then the batch), and the Ray engine with 1 and 2
actors on an embedded Ray (start-up of Ray itself, then each run: time to the first finished file,
which includes starting the actors and loading the model in each, and the steady time per image
after it). Bicubic has almost no compute, so its per-image figures are the engines' own overhead.
Every run writes into a fresh folder, so nothing is skipped.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: idle OpenMP threads spin otherwise

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from utils.backends import load_backend  # noqa: E402
from utils.batch.naming import plan_paths  # noqa: E402
from utils.batch.ray_engine import RayEngine  # noqa: E402
from utils.batch.runner import process_batch  # noqa: E402
from utils.config import load_config, with_overrides  # noqa: E402
from utils.settings import RunSettings  # noqa: E402


def make_inputs(folder: Path, count: int, size: int) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i:02d}.png")
    return folder


def timed_run(run, count: int) -> dict[str, float]:
    """Wall time of ``run(on_item)``, to its first finished file, and per image after the first."""
    stamps: list[float] = []
    start = time.perf_counter()
    items = run(lambda item: stamps.append(time.perf_counter()))
    total = time.perf_counter() - start
    assert len(stamps) == count and all(i.status == "ok" for i in items), [i.reason for i in items]
    return {"total": total, "first": stamps[0] - start, "steady": (stamps[-1] - stamps[0]) / (count - 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--size", type=int, default=48, help="input side in pixels")
    p.add_argument("--backends", nargs="+", default=["bicubic", "realesrgan"])
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        src = make_inputs(Path(tmp) / "in", args.count, args.size)
        rows = []
        start = time.perf_counter()
        engine = RayEngine()
        ray_start = time.perf_counter() - start
        with engine:
            for backend in args.backends:
                cfg = with_overrides(load_config(), {"backend": backend})
                settings = RunSettings.from_config(cfg, backend)

                def local(on_item, out=Path(tmp) / f"local-{backend}"):
                    return process_batch(plan_paths(src, out, "png"), load_backend(backend, cfg), settings,
                                         on_item=on_item)

                rows.append((backend, "local", timed_run(local, args.count)))
                for workers in (1, 2):
                    def on_ray(on_item, out=Path(tmp) / f"ray{workers}-{backend}", workers=workers):
                        return engine.run(plan_paths(src, out, "png"), backend, cfg, settings, workers=workers,
                                          on_item=on_item)

                    rows.append((backend, f"ray, {workers} actor{'s' if workers > 1 else ''}",
                                 timed_run(on_ray, args.count)))

    print(f"{args.count} images of {args.size}×{args.size} px; {os.cpu_count()} CPUs; "
          f"embedded Ray start-up (ray.init): {ray_start:.1f} s\n")
    print("| backend | engine | total s | first file s | per image after the first, ms |")
    print("|---|---|---|---|---|")
    for backend, engine_name, t in rows:
        print(f"| {backend} | {engine_name} | {t['total']:.2f} | {t['first']:.2f} | {t['steady'] * 1000:.0f} |")


if __name__ == "__main__":
    main()
