"""PyTorch versions of the packaged ncnn models (spandrel architectures, waifu2x's UpConv7): equal to ncnn."""
import numpy as np
import pytest
import torch
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.SPAN import SPAN

from utils.backends.fast_models import AnimeBackend, SpanBackend, Waifu2xBackend
from utils.backends.ncnn_import import NcnnFormatError, read_ncnn
from utils.backends.ncnn_net import load_net, package_models_dir
from utils.backends.rrdbnet import MODEL_STEM as X4PLUS
from utils.backends.torch_nets import NETS, compact_state_dict, packaged_torch_net
from utils.backends.waifu2x_net import UpConv7

CASES = [(SpanBackend, "spanx2_ch48", SPAN), (SpanBackend, "spanx4_ch48", SPAN),
         (AnimeBackend, "REALESRGAN_ANIMAVIDEOV3_UP4X", Compact),
         (Waifu2xBackend, "WAIFU2X_PHOTO_UP2X", UpConv7), (Waifu2xBackend, "WAIFU2X_PHOTO_UP2X_DENOISE3X", UpConv7)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2)))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def crop(butterfly) -> np.ndarray:
    """A 28×24 wing edge of Set5 butterfly, 3×h×w float32 (random noise is no image: SPAN's output
    on it spans ±100 and float32 rounding alone moves it by 30 dB)."""
    return np.ascontiguousarray(butterfly[100:128, 60:84].transpose(2, 0, 1))


def ncnn_output(backend, stem: str, chw: np.ndarray) -> np.ndarray:
    folder = package_models_dir(backend.package, backend.requirement)
    net = load_net(folder / f"{stem}.param", folder / f"{stem}.bin", 1, backend.input_blob, backend.output_blob)
    return net(chw)


@pytest.mark.parametrize("backend,stem,arch", CASES, ids=[c[1] for c in CASES])
def test_torch_net_equals_ncnn(weights_dir, crop, backend, stem, arch):
    model = packaged_torch_net(backend.name, stem, weights_dir=weights_dir)
    assert isinstance(model, arch) and not model.training
    with torch.inference_mode():
        out = model(torch.from_numpy(crop)[None])[0].numpy()
    reference = ncnn_output(backend, stem, crop)
    assert out.shape == reference.shape
    assert psnr(out, reference) >= 50  # measured 129-139 dB


def test_conversion_is_cached_as_safetensors(weights_dir):
    packaged_torch_net("span", "spanx2_ch48", weights_dir=weights_dir)
    cache = weights_dir / "span-spanx2_ch48.safetensors"
    written = cache.stat().st_mtime_ns
    model = packaged_torch_net("span", "spanx2_ch48", dtype=torch.bfloat16, weights_dir=weights_dir)
    assert cache.stat().st_mtime_ns == written and next(model.parameters()).dtype == torch.bfloat16


def test_x4plus_is_spandrels_esrgan(weights_dir):
    assert isinstance(packaged_torch_net("realesrgan", X4PLUS, weights_dir=weights_dir), ESRGAN)


def test_unknown_or_mismatched_model_is_refused(weights_dir):
    with pytest.raises(ValueError, match="no PyTorch version of waifu2x/spanx2_ch48; known: realesrgan/"):
        packaged_torch_net("waifu2x", "spanx2_ch48", weights_dir=weights_dir)
    folder = package_models_dir(SpanBackend.package, SpanBackend.requirement)
    span = read_ncnn(folder / "spanx2_ch48.param", folder / "spanx2_ch48.bin", NETS["spanx2_ch48"].sha256)
    with pytest.raises(NcnnFormatError, match="span.param: layers with weights are"):
        compact_state_dict(span, "span.param")
