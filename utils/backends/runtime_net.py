"""A convolutional network on the runtime the policy chose (:mod:`utils.runtimes.policy`): PyTorch, or
OpenVINO converted from the same torch module once per weights (:mod:`utils.runtimes.ir_cache`).

Real-ESRGAN x4plus and the PyTorch versions of the packaged ncnn models (SPAN, realesr-animevideov3,
waifu2x) load through here, so each runtime has one code path for all of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from utils.backends.rrdbnet import upscale
from utils.runtimes import ir_cache
from utils.runtimes.ov_core import CompiledModule
from utils.runtimes.policy import Choice

# Makes the torch module on a device in a dtype, in eval mode.
BuildNet = Callable[[torch.device | str, torch.dtype], nn.Module]
# n×3×h×w float in [0, 1] -> n×3×H×W float32 on the CPU, unclamped.
Net = Callable[[torch.Tensor], torch.Tensor]
# OpenVINO traces at this tile size; the IR's height and width stay dynamic.
TRACE_SIZE = 64


def openvino_conversion(name: str, sources: tuple[Path, ...], build: BuildNet,
                        trace_size: int = TRACE_SIZE) -> ir_cache.Conversion:
    """``build``'s network as OpenVINO converts it: any batch and tile size, keyed by ``sources``."""
    def traced():
        return build("cpu", torch.float32), (torch.rand(1, 3, trace_size, trace_size),), [(-1, 3, -1, -1)]
    return ir_cache.Conversion(name, sources, traced)


def compile_openvino(conversion: ir_cache.Conversion, precision: str) -> Net:
    # The cache folder is read at call time so tests can point it elsewhere.
    return CompiledModule(ir_cache.load_compiled(conversion, precision, ir_cache.CACHE_DIR))


def load_runtime_net(choice: Choice, name: str, sources: tuple[Path, ...], build: BuildNet) -> Net:
    """The network ``build`` makes (its weights read from ``sources``), run as ``choice`` says: torch
    or openvino (``name`` is shown while the IR is converted, the first time)."""
    if choice.runtime == "openvino":
        return compile_openvino(openvino_conversion(name, sources, build), choice.precision)
    if choice.runtime == "torch":
        model = build(choice.device, getattr(torch, choice.precision))
        return lambda x: upscale(model, x.float())
    raise ValueError(f"load_runtime_net runs torch or openvino, not {choice.runtime}")
