"""Runtime and precision per backend: what ``auto`` picks here, and what is refused.

The settings are the config's top-level ``runtime`` (auto | openvino | torch | ncnn) and ``precision``
(auto | float32 | bfloat16 | float16). ``auto`` picks, per backend, the runtime measured fastest on the
machine's kind of processor, and the fastest precision that processor computes natively:

- OpenVINO: bfloat16 where its CPU plugin lists ``BF16`` among ``OPTIMIZATION_CAPABILITIES`` (AVX512-BF16
  or AMX), float16 only where it lists ``FP16``, float32 otherwise. Read from the plugin, never assumed.
- PyTorch: float16 on CUDA; on a CPU bfloat16 only with AMX (on AVX512-BF16 alone torch bf16 is slower
  than float32, :func:`utils.devices.cpu_has_fast_bf16`); float32 elsewhere.
- ncnn: float32.

Measured on two 2-core AMD EPYCs (docs/benchmarks.md, "Runtimes"), one with AVX512-BF16 (OpenVINO lists
``BF16``), one with AVX2 only (it lists ``FP32, INT8, BIN, EXPORT_IMPORT``):
- InvSR: OpenVINO bf16 0.29-0.41× torch float32 per stage; OpenVINO float32 0.63-0.80× with AVX-512 and,
  0.75-1.04× with AVX2 only (0.85× over the four stages in one process; through the CLI level with
  torch, 1.01×, and lighter: no torch modules kept); so OpenVINO on every CPU; torch on CUDA/MPS.
- Real-ESRGAN x4plus: OpenVINO bf16 0.58× ncnn, but OpenVINO float32 1.18× and torch float32 1.41×
  (AVX2 only: OpenVINO float32 1.13× with 2 threads, 1.47× with 1); so OpenVINO where the CPU has BF16,
  ncnn elsewhere; torch on CUDA/MPS.
- SPAN, realesr-animevideov3, waifu2x (torch versions of their ncnn weights, utils/backends/torch_nets.py):
  as x4plus, OpenVINO where the CPU has BF16 (SPAN ×4's forward 0.39× ncnn, OpenVINO float32 0.67×;
  54-58 dB from ncnn), else their first listed runtime, ncnn.
- Users' model files (custom): not measured per file; as x4plus (the commonest architecture of community
  models), OpenVINO where the CPU has BF16, else torch. The backend falls back to torch, with a note, for
  a model OpenVINO cannot convert.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Collection, Mapping

from utils.config import PRECISIONS, RUNTIMES

# What a backend supports comes from its declaration (utils.settings.SPECS[name].runtimes: runtime ->
# precisions, a device may allow fewer); callers pass it in. The first runtime listed is the backend's
# CPU default where OpenVINO does not win.
Runtimes = Mapping[str, tuple[str, ...]]
# Backends that OpenVINO runs faster than every other CPU runtime even in float32 (InvSR: 0.63-0.80×
# torch float32 with AVX-512, level with it with AVX2 only). The others take OpenVINO on a CPU only where it
# computes bfloat16.
OPENVINO_EVEN_IN_FLOAT32 = frozenset({"invsr"})
# Precisions of the OpenVINO CPU plugin, by the capability that makes them native.
OV_PRECISION_CAPABILITY = {"bfloat16": "BF16", "float16": "FP16"}
# Which precisions torch runs well on each device kind (float16 has no fast CPU kernels, bf16 on MPS
# needs macOS 14+).
TORCH_PRECISIONS = {"cpu": ("float32", "bfloat16"), "cuda": ("float32", "bfloat16", "float16"),
                    "mps": ("float32", "float16")}


class RuntimeRefused(ValueError):
    """The asked runtime/precision cannot run this backend here; the message says what to set instead."""


@dataclass(frozen=True)
class Choice:
    """How a backend runs: ``runtime`` on ``device`` ("cpu", "cuda", "mps") in ``precision``."""

    runtime: str
    precision: str
    device: str

    def describe(self) -> str:
        return f"{self.runtime} {self.precision}"


@dataclass(frozen=True)
class Machine:
    """What the policy needs to know of this machine; each is asked lazily (OpenVINO's import is slow)."""

    torch_device: Callable[[], str]                   # "cuda", "mps" or "cpu"
    ov_capabilities: Callable[[], Collection[str]]    # empty when OpenVINO is not installed
    torch_fast_bf16: Callable[[], bool]               # AMX


def this_machine() -> Machine:
    from utils import devices
    from utils.runtimes.ov_core import capabilities

    return Machine(lambda: devices.pick_device().type, capabilities, devices.cpu_has_fast_bf16)


def auto_runtime(backend: str, supported: Runtimes, machine: Machine) -> str:
    """The runtime measured fastest for ``backend`` on this kind of machine (see the module docstring)."""
    if machine.torch_device() != "cpu" and "torch" in supported:
        return "torch"
    if "openvino" in supported:
        caps = machine.ov_capabilities()
        if caps and (backend in OPENVINO_EVEN_IN_FLOAT32 or "BF16" in caps):
            return "openvino"
        if backend in OPENVINO_EVEN_IN_FLOAT32:
            return "torch"
    return next(iter(supported))


def auto_precision(runtime: str, device: str, machine: Machine) -> str:
    if runtime == "openvino":
        caps = machine.ov_capabilities()
        return "bfloat16" if "BF16" in caps else "float32"
    if runtime == "torch":
        if device == "cuda":
            return "float16"
        return "bfloat16" if device == "cpu" and machine.torch_fast_bf16() else "float32"
    return "float32"


def choose(backend: str, supported: Runtimes, runtime: str = "auto", precision: str = "auto",
           machine: Machine | None = None) -> Choice:
    """The runtime and precision ``backend`` (which ``supported`` runtimes -> precisions) runs with,
    ``auto`` resolved for ``machine`` (default: this one).

    Raises RuntimeRefused for a value or combination that cannot run, naming what can.
    """
    for name, value, values in (("runtime", runtime, RUNTIMES), ("precision", precision, PRECISIONS)):
        if value not in values:
            raise RuntimeRefused(f"{name} must be one of {', '.join(values)} (got {value!r})")
    machine = machine or this_machine()
    if runtime == "auto":
        runtime = auto_runtime(backend, supported, machine)
    elif runtime not in supported:
        raise RuntimeRefused(f"runtime {runtime} cannot run {backend}; it runs on {', '.join(supported)}")
    if runtime == "openvino":
        device = "cpu"
        if not machine.ov_capabilities():
            raise RuntimeRefused("runtime openvino: the openvino package is not installed "
                                 "(pip install -r requirements.txt) or finds no CPU device")
    else:
        device = machine.torch_device() if runtime == "torch" else "cpu"
    if precision == "auto":
        precision = auto_precision(runtime, device, machine)
    allowed = supported[runtime]
    if precision not in allowed:
        raise RuntimeRefused(f"precision {precision}: {backend} on {runtime} runs {' or '.join(allowed)} only")
    if runtime == "openvino" and precision in OV_PRECISION_CAPABILITY:
        capability = OV_PRECISION_CAPABILITY[precision]
        if capability not in machine.ov_capabilities():
            raise RuntimeRefused(f"precision {precision} on openvino needs a CPU whose OpenVINO plugin lists "
                                 f"{capability}; this one lists {', '.join(machine.ov_capabilities())}")
    if runtime == "torch" and precision not in TORCH_PRECISIONS.get(device, ("float32",)):
        raise RuntimeRefused(f"precision {precision} is not supported by torch on {device}: choose "
                             f"{' or '.join(TORCH_PRECISIONS.get(device, ('float32',)))}")
    return Choice(runtime, precision, device)
