"""InvSR per stage: torch float32 against OpenVINO (each precision this CPU offers), one 128² LR patch.

The models are loaded the way inference loads them (``load_models`` / ``load_openvino_models``) from
the weights given, normally SD-Turbo's full architecture with random weights
(``utils.training.tiny_sd.build_random_sd_turbo``; the cost of a forward pass does not depend on the
weight values). Every stage runs on the same inputs in every variant, the variants interleaved so that
each ratio sees the same background load; the best of the repeats counts. This is what
``utils.runtimes.policy``'s choice for InvSR rests on. Measure on a quiet machine: under contention
OpenVINO's threads lose more than torch's (docs/benchmarks.md).

    .venv/bin/python scripts/measure_invsr_runtimes.py --sd_path /tmp/sdr --started_ckpt_path /tmp/np.pth
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from utils.backends.invsr.models import load_models, predictor_params  # noqa: E402
from utils.backends.invsr.openvino_models import load_openvino_models  # noqa: E402
from utils.backends.invsr.sampling import POSITIVE_PROMPT, upsample_lr  # noqa: E402
from utils.backends.invsr.weights import InvSRWeights  # noqa: E402
from utils.config import load_config  # noqa: E402
from utils.devices import cpu_model, set_threads  # noqa: E402
from utils.runtimes import ov_core  # noqa: E402
from utils.runtimes.policy import OV_PRECISION_CAPABILITY  # noqa: E402

PATCH = 128


def stage_calls(models, lr: torch.Tensor) -> dict:
    """name -> zero-argument call of each stage on one patch (the same inputs for every variant)."""
    gen = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, PATCH // 2, PATCH // 2, generator=gen)
    eps = torch.randn(1, 4, PATCH // 2, PATCH // 2, generator=gen)
    t = torch.tensor([199])
    up = upsample_lr(lr) * 2 - 1
    embeds = models.prompt_embeds(POSITIVE_PROMPT)
    return {
        "VAE encode": lambda: models.encode(up)[0],
        "noise predictor": lambda: models.predict_noise(lr, t, eps),
        "UNet step": lambda: models.denoise(latent, t, embeds),
        "VAE decode": lambda: models.decode(latent),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sd_path", type=Path, required=True)
    p.add_argument("--started_ckpt_path", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    threads = set_threads()
    weights = InvSRWeights(args.sd_path, args.started_ckpt_path)
    np_params = predictor_params(load_config())
    lr = torch.rand(1, 3, PATCH, PATCH, generator=torch.Generator().manual_seed(0))
    variants = {"torch float32": stage_calls(load_models(weights, np_params, torch.device("cpu"), torch.float32), lr)}
    native = [p for p, cap in OV_PRECISION_CAPABILITY.items() if cap in ov_core.capabilities()]
    for precision in ["float32", *native]:
        models = load_openvino_models(weights, np_params, precision)
        variants[f"openvino {precision}"] = stage_calls(models, lr)
    times: dict[tuple[str, str], list[float]] = {}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    with torch.inference_mode():
        for name in variants["torch float32"]:
            for variant, calls in variants.items():
                outputs[name, variant] = calls[name]().float()  # warm-up; kernels are chosen on the first call
            for _ in range(args.repeats):
                for variant, calls in variants.items():
                    start = time.perf_counter()
                    calls[name]()
                    times.setdefault((name, variant), []).append(time.perf_counter() - start)
    print(f"{cpu_model()}; OpenVINO {ov_core.version()} capabilities {', '.join(ov_core.capabilities())}; "
          f"{threads} threads; load average {os.getloadavg()[0]:.1f}; best of {args.repeats} interleaved repeats")
    names = list(variants)
    print("| stage | " + " | ".join(f"{v} s" for v in names) + " | " +
          " | ".join(f"{v} / torch" for v in names[1:]) + " | " +
          " | ".join(f"{v} rel. L2" for v in names[1:]) + " |")
    print("|---" * (1 + 3 * len(names) - 2) + "|")
    totals = {v: 0.0 for v in names}
    for name in variants["torch float32"]:
        best = {v: min(times[name, v]) for v in names}
        ref = outputs[name, "torch float32"]
        errors = [float((outputs[name, v] - ref).norm() / ref.norm()) for v in names[1:]]
        for v in names:
            totals[v] += best[v]
        print(f"| {name} | " + " | ".join(f"{best[v]:.2f}" for v in names) + " | " +
              " | ".join(f"{best[v] / best['torch float32']:.2f}×" for v in names[1:]) + " | " +
              " | ".join(f"{e:.1e}" for e in errors) + " |")
    print("| all four | " + " | ".join(f"{totals[v]:.2f}" for v in names) + " | " +
          " | ".join(f"{totals[v] / totals['torch float32']:.2f}×" for v in names[1:]) + " | |")


if __name__ == "__main__":
    main()
