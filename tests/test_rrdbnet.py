"""Real-ESRGAN x4plus in PyTorch: the ncnn reader, the conversion and its cache, the dtype choice."""
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from datapipe.image_io import read_image
from tests.conftest import DATASETS
from tests.test_realesrgan import direct_ncnn
from utils import devices
from utils.backends import rrdbnet, weight_cache
from utils.backends.ncnn_import import REALESRGAN_X4PLUS_SHA256, NcnnFormatError, read_ncnn
from utils.backends.rrdbnet import load_rrdbnet, packaged_model_files, ncnn_to_state_dict, upscale
from utils.devices import cpu_has_fast_bf16


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def layers():
    return read_ncnn(*packaged_model_files(), REALESRGAN_X4PLUS_SHA256)


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def crop() -> np.ndarray:
    """A 32×32 wing edge of Set5 butterfly, 3×h×w float32 in [0, 1]."""
    rgb = read_image(DATASETS / "Set5" / "butterfly.png").rgb
    return np.ascontiguousarray(rgb[100:132, 60:92].transpose(2, 0, 1))


@pytest.fixture(scope="module")
def fp32_out(weights_dir, crop) -> np.ndarray:
    model = load_rrdbnet("cpu", torch.float32, weights_dir=weights_dir)
    return upscale(model, torch.from_numpy(crop)[None])[0].numpy()


def test_reader_parses_the_packaged_x4plus(layers):
    assert len(layers) == 999
    convs = [layer for layer in layers if layer.type == "Convolution"]
    assert len(convs) == 351  # conv_first + 23 blocks × 3 dense blocks × 5 + 5 in the tail
    first, grow, last = convs[0], convs[2], convs[-1]
    assert first.weights["weight"].shape == (64, 3, 3, 3) and first.weights["weight"].dtype == np.float16
    assert first.weights["bias"].shape == (64,) and first.weights["bias"].dtype == np.float32
    assert first.weights["bias"][0] == pytest.approx(0.0123722, abs=1e-6)
    assert grow.weights["weight"].shape == (32, 96, 3, 3)  # conv2 of a dense block: 64 + 32 in
    assert last.weights["weight"].shape == (3, 64, 3, 3)
    assert convs[1].params[9] == 2 and convs[1].params[10] == [0.2]  # fused LeakyReLU(0.2)
    interps = [layer.params for layer in layers if layer.type == "Interp"]
    assert interps == [{0: 1, 1: 2.0, 2: 2.0}] * 2  # nearest ×2, twice


def test_changed_param_file_is_refused(tmp_path):
    param, weights = packaged_model_files()
    bad = tmp_path / param.name
    shutil.copy(param, bad)
    bad.write_text(bad.read_text().replace("0=64 1=3", "0=64 1=5", 1))
    with pytest.raises(NcnnFormatError, match=r"sha256 .* differs from the recorded c8a066c1.*refusing"):
        read_ncnn(bad, weights, REALESRGAN_X4PLUS_SHA256)


def test_graph_that_is_not_x4plus_is_refused(layers):
    conv1 = next(i for i, layer in enumerate(layers) if layer.name == "Conv_1")
    changed = list(layers)
    changed[conv1] = type(layers[conv1])(**{**vars(layers[conv1]), "params": {0: 32, 1: 3, 4: 1, 5: 1,
                                                                                6: 18432}})
    with pytest.raises(NcnnFormatError, match="layer Conv_1 does not match RRDBNet x4plus"):
        ncnn_to_state_dict(changed)


def test_fp32_model_matches_ncnn(crop, fp32_out):
    reference = direct_ncnn(crop)
    assert fp32_out.shape == reference.shape == (3, 128, 128)
    assert psnr(fp32_out, reference) >= 60


def test_bf16_model_is_close_to_fp32(weights_dir, crop, fp32_out):
    model = load_rrdbnet("cpu", torch.bfloat16, weights_dir=weights_dir)
    assert model.model[0].weight.dtype == torch.bfloat16  # spandrel's ESRGAN: model.0 is conv_first
    out = upscale(model, torch.from_numpy(crop)[None])
    assert out.dtype == torch.float32
    assert psnr(out[0].numpy(), fp32_out) >= 45


def test_conversion_is_cached_and_reused(tmp_path, monkeypatch):
    cache = rrdbnet.converted_weights_path(tmp_path)
    calls = []
    real_read = rrdbnet.read_ncnn
    monkeypatch.setattr(rrdbnet, "read_ncnn", lambda *a: calls.append(a) or real_read(*a))
    first = rrdbnet.x4plus_state_dict(weights_dir=tmp_path)
    assert len(calls) == 1 and cache.is_file()
    written = cache.stat().st_mtime_ns
    model = load_rrdbnet("cpu", torch.float32, weights_dir=tmp_path)
    assert len(calls) == 1 and cache.stat().st_mtime_ns == written  # read from the cache only
    assert torch.equal(model.model[-1].bias, first["conv_last.bias"])
    assert model.model[0].weight.is_contiguous(memory_format=torch.channels_last)

    # A cache made from other source files is converted again, not served.
    save_file(first, str(cache), metadata={"format": weight_cache.CACHE_FORMAT, "param_sha256": "0" * 64,
                                                 "bin_sha256": "0" * 64})
    rrdbnet.x4plus_state_dict(weights_dir=tmp_path)
    assert len(calls) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="CPU flags are read on Linux only")
def test_fast_bf16_is_read_from_cpu_flags(tmp_path):
    with_amx = tmp_path / "amx"
    with_amx.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n")
    avx512_bf16 = tmp_path / "avx512bf16"  # native bf16 without AMX: measured slower than float32
    avx512_bf16.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    without = tmp_path / "avx2"
    without.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert cpu_has_fast_bf16(with_amx) is True
    assert cpu_has_fast_bf16(avx512_bf16) is False
    assert cpu_has_fast_bf16(without) is False
    assert cpu_has_fast_bf16(tmp_path / "missing") is False
