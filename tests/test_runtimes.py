"""Runtime/precision policy (on faked machines) and OpenVINO's convert-once IR cache (tiny modules)."""
from __future__ import annotations

import pytest
import torch

from utils.runtimes import ir_cache, ov_core
from utils.runtimes.policy import Choice, Machine, RuntimeRefused, choose
from utils.settings import SPECS

# What OpenVINO 2026.4.1's CPU plugin reported on the project's machines (AMD EPYCs).
AVX512_BF16 = ("BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")
AVX512_NO_BF16 = ("WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT")
AVX2_ONLY = ("FP32", "INT8", "BIN", "EXPORT_IMPORT")


def pick(backend, runtime="auto", precision="auto", machine=None) -> Choice:
    """The policy applied to ``backend``'s declared runtimes."""
    return choose(backend, SPECS[backend].runtimes, runtime, precision, machine)


def machine(device="cpu", caps=AVX512_BF16, amx=False) -> Machine:
    return Machine(lambda: device, lambda: caps, lambda: amx)


@pytest.mark.parametrize("backend,caps,amx,expected", [
    ("invsr", AVX512_BF16, False, Choice("openvino", "bfloat16", "cpu")),
    ("invsr", AVX512_NO_BF16, False, Choice("openvino", "float32", "cpu")),  # OV f32 0.63-0.80x torch f32
    ("invsr", AVX2_ONLY, False, Choice("openvino", "float32", "cpu")),  # level with torch f32, lighter
    ("invsr", (), False, Choice("torch", "float32", "cpu")),            # no OpenVINO: torch
    ("invsr", (), True, Choice("torch", "bfloat16", "cpu")),            # torch bf16 only with AMX
    ("realesrgan", AVX512_BF16, False, Choice("openvino", "bfloat16", "cpu")),
    ("realesrgan", AVX512_NO_BF16, False, Choice("ncnn", "float32", "cpu")),  # OV f32 is 1.18x ncnn
    ("realesrgan", AVX2_ONLY, False, Choice("ncnn", "float32", "cpu")),
    ("span", AVX512_BF16, False, Choice("openvino", "bfloat16", "cpu")),
    ("waifu2x", AVX2_ONLY, False, Choice("ncnn", "float32", "cpu")),    # the first listed runtime
    ("bicubic", AVX512_BF16, False, Choice("torch", "float32", "cpu")),
])
def test_auto_follows_the_capability_report(backend, caps, amx, expected):
    assert pick(backend, "auto", "auto", machine(caps=caps, amx=amx)) == expected


def test_auto_on_gpus_keeps_torch_float16_on_cuda():
    assert pick("invsr", machine=machine("cuda")) == Choice("torch", "float16", "cuda")
    assert pick("realesrgan", machine=machine("cuda")) == Choice("torch", "float16", "cuda")
    assert pick("realesrgan", machine=machine("mps")) == Choice("torch", "float32", "mps")


def test_explicit_choices_are_kept():
    assert pick("realesrgan", "openvino", "float32", machine()) == Choice("openvino", "float32", "cpu")
    assert pick("realesrgan", "torch", "auto", machine()) == Choice("torch", "float32", "cpu")
    assert pick("invsr", "torch", "bfloat16", machine()) == Choice("torch", "bfloat16", "cpu")


@pytest.mark.parametrize("backend,runtime,precision,caps,words", [
    ("realesrgan", "ncnn", "bfloat16", AVX512_BF16, "precision bfloat16: realesrgan on ncnn runs float32 only"),
    ("bicubic", "openvino", "auto", AVX512_BF16, "runtime openvino cannot run bicubic; it runs on torch"),
    ("invsr", "ncnn", "auto", AVX512_BF16, "runtime ncnn cannot run invsr"),
    ("invsr", "openvino", "bfloat16", AVX2_ONLY, "needs a CPU whose OpenVINO plugin lists BF16"),
    ("invsr", "openvino", "float16", AVX512_BF16, "lists FP16"),
    ("invsr", "torch", "float16", AVX512_BF16, "float16 is not supported by torch on cpu"),
    ("invsr", "openvino", "auto", (), "openvino package is not installed"),
    ("invsr", "onnx", "auto", AVX512_BF16, "runtime must be one of auto, openvino, torch, ncnn"),
    ("invsr", "auto", "int4", AVX512_BF16, "precision must be one of auto, float32, bfloat16, float16"),
])
def test_combinations_that_cannot_run_are_refused(backend, runtime, precision, caps, words):
    with pytest.raises(RuntimeRefused, match=words):
        pick(backend, runtime, precision, machine(caps=caps))


def test_compile_settings_carry_precision_threads_and_latency(monkeypatch):
    from utils import devices

    monkeypatch.setattr(devices, "thread_count", lambda: 3)
    assert ov_core.compile_config("bfloat16") == {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 3,
                                                  "PERFORMANCE_HINT": "LATENCY"}


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.out = torch.nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.out(torch.relu(self.conv(x)))


def conversion(weights_file, built: list) -> ir_cache.Conversion:
    def build():
        module = Tiny().eval()
        module.load_state_dict(torch.load(weights_file))
        built.append(module)
        return module, (torch.rand(1, 3, 16, 16),), [(-1, 3, -1, -1)]
    return ir_cache.Conversion("tiny net", (weights_file,), build)


def test_ir_is_converted_once_and_again_when_the_weights_change(tmp_path):
    weights = tmp_path / "tiny.pth"
    torch.manual_seed(0)
    torch.save(Tiny().state_dict(), weights)
    built, said = [], []
    first = ir_cache.load_compiled(conversion(weights, built), "float32", tmp_path / "ov", said.append)
    assert len(built) == 1 and said[0].startswith("preparing tiny net for this CPU, once")
    reference = built[0]
    x = torch.rand(2, 3, 24, 20)  # another batch and shape than the example: dynamic dimensions
    got = ov_core.CompiledModule(first)(x)
    with torch.no_grad():
        assert torch.allclose(got, reference(x), atol=1e-5)

    ir_cache.load_compiled(conversion(weights, built), "float32", tmp_path / "ov", said.append)
    assert len(built) == 1 and len(said) == 2  # read from the cache: no build, nothing announced

    torch.manual_seed(1)
    torch.save(Tiny().state_dict(), weights)
    changed = ir_cache.load_compiled(conversion(weights, built), "float32", tmp_path / "ov", said.append)
    assert len(built) == 2
    with torch.no_grad():
        assert torch.allclose(ov_core.CompiledModule(changed)(x), built[1](x), atol=1e-5)
    assert len(list((tmp_path / "ov").glob("tiny-net-float32-*/model.xml"))) == 2


def test_bf16_compiles_in_bf16_where_the_cpu_lists_it(tmp_path):
    if "BF16" not in ov_core.capabilities():
        pytest.skip("this CPU's OpenVINO plugin does not list BF16")
    weights = tmp_path / "tiny.pth"
    torch.save(Tiny().state_dict(), weights)
    compiled = ir_cache.load_compiled(conversion(weights, []), "bfloat16", tmp_path / "ov", lambda _: None)
    assert compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
