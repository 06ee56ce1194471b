"""SPAN, realesr-animevideov3 and waifu2x on torch and OpenVINO: equal to ncnn, tiled like the whole
image, the OpenVINO IR converted once."""
import numpy as np
import pytest
import torch

from utils.backends import BACKENDS
from utils.config import with_overrides
from utils.evaluation.datasets import DATASETS_ROOT, load_rgb
from utils.pipeline.chain import to_tensor
from utils.runtimes import ir_cache, ov_core
from tests.conftest import run_settings

FAST = ["span", "realesrgan-anime", "waifu2x"]
pytestmark = pytest.mark.usefixtures("ir_dir")


@pytest.fixture(scope="module")
def lr() -> torch.Tensor:
    """An 80×96 crop of Set14 zebra: stripes and grass, where differences show; more than one 16-px tile
    with its context margins (64 px for SPAN)."""
    return to_tensor(load_rgb(DATASETS_ROOT / "Set14" / "zebra.png")[100:180, 120:216].astype(np.float32) / 255)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a.double() - b.double()) ** 2).mean()))


def run(cfg, name, lr, runtime, precision="float32", **settings):
    chosen = with_overrides(cfg, {"runtime": runtime, "precision": precision})
    backend = BACKENDS[name](chosen)
    return backend, backend.upscale(lr, run_settings(chosen, name, {"color_fix": "none", **settings}))


@pytest.fixture(scope="module")
def ncnn_outputs(cfg, lr):
    return {name: run(cfg, name, lr, "ncnn")[1] for name in FAST}


@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("runtime", ["openvino", "torch"])
def test_float32_equals_ncnn(cfg, lr, ncnn_outputs, name, runtime):
    backend, sr = run(cfg, name, lr, runtime)
    assert backend.identity["runtime"] == runtime and backend.identity["precision"] == "float32"
    assert sr.shape == ncnn_outputs[name].shape
    assert psnr(sr, ncnn_outputs[name]) >= 50


@pytest.mark.parametrize("name", FAST)
def test_openvino_bfloat16_stays_within_45_db_of_ncnn(cfg, lr, ncnn_outputs, name):
    if "BF16" not in ov_core.capabilities():
        pytest.skip("this CPU's OpenVINO plugin does not list BF16")
    backend, sr = run(cfg, name, lr, "openvino", "bfloat16")
    assert backend.identity["precision"] == "bfloat16"
    assert 45 <= psnr(sr, ncnn_outputs[name]) < 80  # bf16 really ran: float32 reaches > 90 dB


@pytest.mark.parametrize("name", FAST)
def test_openvino_tiles_stay_within_45_db_of_the_whole_image(cfg, lr, name):
    backend, whole = run(cfg, name, lr, "openvino")
    tiles = []

    def counted(net):
        return lambda x: tiles.append(x.shape) or net(x)

    backend.nets = {stem: counted(net) for stem, net in backend.nets.items()}
    tiled = backend.upscale(lr, run_settings(with_overrides(cfg, {"runtime": "openvino"}), name,
                                             {"color_fix": "none", f"{name}.tile_size": 16}))
    assert len(tiles) > 1 and tiled.shape == whole.shape
    assert psnr(tiled, whole) >= 45


def test_the_ir_is_converted_once(cfg, lr, ir_dir, monkeypatch):
    run(cfg, "realesrgan-anime", lr, "openvino")  # converted by now, here or in an earlier test
    converted = []
    monkeypatch.setattr(ir_cache, "convert", lambda *a: converted.append(a))
    backend, _ = run(cfg, "realesrgan-anime", lr, "openvino")
    assert converted == [] and backend.identity["runtime"] == "openvino"
    assert any(ir_dir.glob("realesrgan-anime-*-float32-*/model.xml"))
