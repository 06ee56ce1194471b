"""Peak memory of producing one image, per backend: what ``limits.max_memory_mb`` guards.

Each measurement runs in a fresh process: the backend is loaded, the input decoded, then the peak
resident set is reset (Linux ``/proc/self/clear_refs``) so model loading is excluded, and one image
goes through the whole chain (backend, post-processing, PNG encoding). Reported: the peak over the
resident set right after loading, for the backend's phase (tiles and blending) and for what follows
(post-processing and encoding); the image's peak is the larger of the two.

    .venv/bin/python -m scripts.measure_memory                 # every backend: peaks and the fitted costs
    .venv/bin/python -m scripts.measure_memory --postprocess   # post-processing's bytes per pixel
    .venv/bin/python -m scripts.measure_memory --probe span 300 400 --set 'color_fix="none"'  # one JSON line
    .venv/bin/python -m scripts.measure_memory --invsr-vae 128  # InvSR's VAE on one patch

InvSR is not measured here (SD-Turbo's weights are not on this machine): see docs/benchmarks.md.
"""
from __future__ import annotations

import os

# Spinning OpenMP workers make torch much slower on a shared machine; must precede importing torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

# (backend, config overrides, three (h, w, tile size) runs): two input sizes at one tile size give the
# bytes per output pixel, a larger tile the bytes per tile pixel. Every run has several tiles: one
# tile skips blending.
RUNS = [
    ("bicubic", {}, [(300, 400, 256), (600, 800, 256), (600, 800, 512)]),
    ("span", {}, [(300, 400, 128), (600, 800, 128), (600, 800, 512)]),
    ("realesrgan-anime", {}, [(300, 400, 128), (600, 800, 128), (600, 800, 512)]),
    ("waifu2x", {}, [(300, 400, 128), (600, 800, 128), (600, 800, 256)]),
    ("realesrgan", {"runtime": "ncnn"}, [(320, 448, 128), (320, 448, 256), (600, 800, 256)]),
]
# Post-processing settings measured against the default (wavelet colour fix), on SPAN (bicubic refuses
# fusion) with its two smaller runs above.
POSTPROCESS = [("color_fix", "none"), ("color_fix", "ycbcr"), ("color_fix", "histogram"), ("color_fix", "hybrid"),
               ("postprocess.attention_fusion", True), ("postprocess.edge_enhancement", 0.5)]
MB = 2 ** 20


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> int:
    """Reset the peak resident set to the current one; returns it in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def peak() -> int:
    return _status_kb("VmHWM") * 1024


def probe(backend_name: str, h: int, w: int, overrides: dict) -> dict:
    """One measurement in this process (call it in a fresh one): bytes over the post-load baseline."""
    import numpy as np

    from datapipe.image_io import LoadedImage, encode_image
    from utils.backends import load_backend
    from utils.config import load_config, with_overrides
    from utils.devices import set_threads
    from utils.pipeline.chain import upscale_image
    from utils.pipeline.limits import tile_output_pixels, working_memory_mb
    from utils.settings import RunSettings

    set_threads()
    cfg = with_overrides(load_config(), overrides)
    settings = RunSettings.from_config(cfg, backend_name)
    backend = load_backend(backend_name, cfg)
    # Noise: the worst case for the PNG encoder's buffer, and no different for the models' arithmetic.
    img = LoadedImage(np.random.default_rng(0).random((h, w, 3), dtype=np.float32))
    phases = {}
    upscale = backend.upscale

    def measured_upscale(*args, **kwargs):
        out = upscale(*args, **kwargs)
        phases["backend"] = peak() - phases["baseline"]
        reset_peak()  # the peak of what follows, over the same baseline
        return out

    backend.upscale = measured_upscale
    phases["baseline"] = reset_peak()
    result, info = upscale_image(img, backend, settings)
    encode_image(result, "png")
    phases["post"] = peak() - phases["baseline"]
    scale = info.scale
    return {"backend": backend_name, "input": [h, w], "scale": scale, "output_pixels": h * w * scale * scale,
            "tile_pixels": tile_output_pixels(h, w, scale, settings), "baseline_mb": phases["baseline"] / MB,
            "backend_bytes": phases["backend"], "post_bytes": phases["post"],
            "peak_bytes": max(phases["backend"], phases["post"]), "guard_mb": working_memory_mb(h, w, scale, settings)}


def probe_in_subprocess(backend_name: str, h: int, w: int, overrides: dict) -> dict:
    """:func:`probe` in a fresh interpreter (nothing loaded or allocated before)."""
    sets = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    # As a module from the project root, so the child imports this tree's library.
    cmd = [sys.executable, "-m", "scripts.measure_memory", "--probe", backend_name, str(h), str(w),
           *(arg for s in sets for arg in ("--set", s))]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {backend_name} {h}×{w} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_set(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    return key, json.loads(value)


# stabilityai/sd-turbo vae/config.json (SD 2.1's VAE): what InvSR encodes and decodes every patch with.
SD_VAE = dict(down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
              block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4, norm_num_groups=32,
              sample_size=768, scaling_factor=0.18215)


def probe_invsr_vae(pch: int) -> dict:
    """Peak bytes of encoding and decoding one pch×pch LR patch with SD-Turbo's VAE shape (random
    weights, float32, channels-last as on the CPU): InvSR's largest per-patch buffers."""
    import torch
    from diffusers import AutoencoderKL

    from utils.backends.invsr.sampling import encode_latent, upsample_lr
    from utils.devices import set_threads

    set_threads()
    vae = AutoencoderKL(**SD_VAE).eval().to(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, pch, pch)
    baseline = reset_peak()
    with torch.inference_mode():
        latent = encode_latent(vae, upsample_lr(lr), torch.randn_like)
        vae.decode(latent / vae.config.scaling_factor)
    return {"patch": pch, "tile_pixels": (4 * pch) ** 2, "peak_bytes": peak() - baseline}


def fit(results: list[dict]) -> tuple[float, float, float]:
    """(fixed bytes, bytes per tile pixel, bytes per output pixel) through three measured peaks."""
    import numpy as np

    rows = [[1.0, r["tile_pixels"], r["output_pixels"]] for r in results]
    fixed, per_tile, per_pixel = np.linalg.solve(np.array(rows), np.array([r["peak_bytes"] for r in results]))
    return float(fixed), float(per_tile), float(per_pixel)


def peak_slope(name: str, sizes: list[tuple[int, int, int]], overrides: dict) -> float:
    """Bytes per output pixel between two sizes at one tile size: the fixed and per-tile costs cancel."""
    from utils.settings import SPECS

    (a, b) = [probe_in_subprocess(name, h, w, {**overrides, SPECS[name].tile_key: tile}) for h, w, tile in sizes]
    return (b["peak_bytes"] - a["peak_bytes"]) / (b["output_pixels"] - a["output_pixels"])


def postprocess_table() -> None:
    name, overrides, sizes = next(run for run in RUNS if run[0] == "span")
    default = peak_slope(name, sizes[:2], overrides)
    print(f"| post-processing | bytes per output pixel | over the default |\n|---|---|---|\n"
          f"| default (wavelet) | {default:.1f} | 0 |", flush=True)
    for key, value in POSTPROCESS:
        slope = peak_slope(name, sizes[:2], {**overrides, key: value})
        print(f"| {key}={value} | {slope:.1f} | {slope - default:+.1f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe", nargs=3, metavar=("BACKEND", "H", "W"), help="one measurement, as JSON")
    parser.add_argument("--set", action="append", default=[], type=parse_set, metavar="KEY=JSON",
                        help="config override, e.g. color_fix='\"none\"' or span.tile_size=128")
    parser.add_argument("--backends", nargs="+", help="only these backends (default: all in RUNS)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per run; the largest peak counts")
    parser.add_argument("--postprocess", action="store_true", help="post-processing's bytes per pixel instead")
    parser.add_argument("--invsr-vae", type=int, metavar="PCH", help="InvSR's VAE on one PCH-px patch, as JSON")
    args = parser.parse_args()
    extra = dict(args.set)
    if args.probe:
        name, h, w = args.probe
        print(json.dumps(probe(name, int(h), int(w), extra)))
        return
    if args.invsr_vae:
        print(json.dumps(probe_invsr_vae(args.invsr_vae)))
        return
    if args.postprocess:
        postprocess_table()
        return
    from utils.settings import SPECS

    print("| backend | input | tile | output MP | tile MP | backend phase MB | after it MB | peak B/px | guard MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    fits = {}
    for name, overrides, sizes in RUNS:
        if args.backends and name not in args.backends:
            continue
        results = []
        for h, w, tile in sizes:
            # The resident set's peak varies by ~10 % from run to run (allocator reuse): the largest counts.
            r = max((probe_in_subprocess(name, h, w, {**overrides, SPECS[name].tile_key: tile, **extra})
                     for _ in range(args.repeats)), key=lambda r: r["peak_bytes"])
            results.append(r)
            print(f"| {name} | {w}×{h} | {tile} | {r['output_pixels'] / 1e6:.2f} | {r['tile_pixels'] / 1e6:.2f} | "
                  f"{r['backend_bytes'] / MB:.0f} | {r['post_bytes'] / MB:.0f} | "
                  f"{r['peak_bytes'] / r['output_pixels']:.1f} | {r['guard_mb']:.0f} |", flush=True)
        fits[name] = results, fit(results)
    print("\n| backend | fixed MB | bytes per tile pixel | bytes per output pixel |\n|---|---|---|---|")
    for name, (_, (fixed, per_tile, per_pixel)) in fits.items():
        print(f"| {name} | {fixed / MB:.0f} | {per_tile:.0f} | {per_pixel:.1f} |")
    # The guard's figures: every backend's output pixels cost the same work (blending, post-processing),
    # so all get the largest bytes per pixel; the fixed part is then the largest remainder of a run.
    per_pixel = max(f[2] for _, f in fits.values())
    print(f"\nguard: {per_pixel:.1f} bytes per output pixel\n| backend | fixed MB | bytes per tile pixel |\n|---|---|---|")
    for name, (results, (_, per_tile, _)) in fits.items():
        fixed = max(r["peak_bytes"] - per_tile * r["tile_pixels"] - per_pixel * r["output_pixels"] for r in results)
        print(f"| {name} | {fixed / MB:.0f} | {per_tile:.0f} |")


if __name__ == "__main__":
    main()
