"""Torch modules converted to OpenVINO IR once per weights, then read from ``weights/openvino/``.

An IR is keyed by the sha256 of the weight files it was made from, the OpenVINO version, the
precision and the conversion's name; weights that change, or another OpenVINO, make a new IR. The IR
is saved in float32 (``compress_to_fp16=False``): the precision is applied when it is compiled, and
OpenVINO keeps the compiled blob under ``CACHE_DIR`` so later processes start in a fraction of a second.
Input shapes are dynamic (-1) where tiles and batches vary: measured as fast as a static shape
(VAE decode in bf16: 6.35 s both), and no recompilation per tile shape.
"""
from __future__ import annotations

import gc
import hashlib
import json
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from utils.checksums import cached_file_sha256
from utils.config import WEIGHTS_DIR
from utils.runtimes import ov_core

CACHE_DIR = WEIGHTS_DIR / "openvino"
BLOB_SUBDIR = "compiled"
IR_FORMAT = "1"  # bump when what a conversion stores changes, so old IRs are not reused

# module, example inputs, input shapes (one tuple per input, -1 for a dynamic dimension)
Built = tuple[Any, tuple, Sequence[tuple[int, ...]]]


@dataclass(frozen=True)
class Conversion:
    """How to make one IR: ``build()`` constructs the torch module from ``sources`` (the files its
    weights come from, hashed for the cache key) only when no IR for them exists yet."""

    name: str                          # shown to the user, and part of the key
    sources: tuple[Path, ...]
    build: Callable[[], Built]


def _to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Where "preparing <model> for this CPU, once: ..." goes; the studio points it at its status line.
announce: Callable[[str], None] = _to_stderr


def ir_key(conversion: Conversion, precision: str) -> str:
    ingredients = {"name": conversion.name, "sources": [cached_file_sha256(p) for p in conversion.sources],
                   "openvino": ov_core.version(), "precision": precision, "format": IR_FORMAT}
    return hashlib.sha256(json.dumps(ingredients, sort_keys=True).encode()).hexdigest()


def ir_path(conversion: Conversion, precision: str, cache_dir: Path = CACHE_DIR) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", conversion.name.lower()).strip("-")
    return cache_dir / f"{slug}-{precision}-{ir_key(conversion, precision)[:16]}" / "model.xml"


def convert(conversion: Conversion, xml: Path) -> float:
    """Build the torch module, convert it and save the IR at ``xml`` (atomically); seconds taken."""
    import openvino as ov
    import torch

    start = time.perf_counter()
    module, example, shapes = conversion.build()
    # Tracing warns about every shape check it freezes (diffusers has many): nothing a user can act on.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = ov.convert_model(module, example_input=example, input=[list(s) for s in shapes])
    del module  # the torch weights are not needed once converted: free them before compiling
    gc.collect()
    xml.parent.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=xml.parent.parent, prefix=f".{xml.parent.name}."))
    try:
        ov.save_model(model, str(staging / xml.name), compress_to_fp16=False)
        del model
        staging.chmod(0o755)  # mkdtemp's 0700 would hide the IR from other users of a shared install
        try:
            staging.rename(xml.parent)
        except OSError:  # another process saved the same IR first: keep theirs
            pass
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return time.perf_counter() - start


def load_compiled(conversion: Conversion, precision: str, cache_dir: Path = CACHE_DIR,
                  notify: Optional[Callable[[str], None]] = None) -> Any:
    """The compiled OpenVINO model for ``conversion`` in ``precision``: from the IR cache, converted
    first (once, announced with its duration) when the cache has none for these weights."""
    xml = ir_path(conversion, precision, cache_dir)
    if not xml.is_file():
        say = notify or announce
        say(f"preparing {conversion.name} for this CPU, once: converting it to OpenVINO ({precision}) ...")
        seconds = convert(conversion, xml)
        say(f"prepared {conversion.name} in {seconds:.0f} s; later runs read it from {xml.parent}")
    return ov_core.compile_ir(xml, precision, cache_dir / BLOB_SUBDIR)
