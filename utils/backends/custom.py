"""The ``custom`` backend: a user's own model file (``custom.model_path``), any architecture spandrel
detects, run through the same context-margin tiling, post-processing and resume records as the packaged
models, on OpenVINO where the model converts and torch otherwise. Its spec is the file's
(:func:`file_spec`): its one native scale, and the context margin and tile alignment of its architecture
(:func:`utils.backends.custom_model.context_margin`, :func:`~utils.backends.custom_model.tile_alignment`).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Optional

import torch

from utils.backends.base import Availability, BackendUnavailable, TiledBackend, backend_choice
from utils.backends.custom_model import CustomModel, ModelFileError, check_model_path, load_custom_model
from utils.backends.runtime_net import TRACE_SIZE, Net, compile_openvino, openvino_conversion
from utils.config import runtime_setting
from utils.runtimes import ir_cache
from utils.runtimes.policy import Choice
from utils.settings import FILE_SPECS, SPECS, BackendSpec


def model_path(cfg) -> Path:
    path = cfg.custom.model_path
    if not path:
        raise BackendUnavailable("the custom backend needs a model file: --model FILE (or custom.model_path)")
    return Path(str(path)).expanduser()


def file_spec(path: Optional[str]) -> BackendSpec:
    """The custom backend's spec for the model file ``path``; ModelFileError when it cannot be used."""
    if not path:
        raise ModelFileError("the custom backend needs a model file: --model FILE (or custom.model_path)")
    model = load_custom_model(Path(path).expanduser())
    return dataclasses.replace(SPECS["custom"], scales=(model.scale,), context_margin=model.context_margin,
                               size_multiple=model.tile_alignment)


FILE_SPECS["custom"] = file_spec


def custom_model(cfg) -> CustomModel:
    """The checked model that ``cfg.custom.model_path`` names (loaded once per file version)."""
    try:
        return load_custom_model(model_path(cfg))
    except ModelFileError as exc:
        raise BackendUnavailable(str(exc)) from None


def supported_choice(model: CustomModel, cfg, choice: Choice) -> Choice:
    """``choice`` where the model's descriptor supports its precision. With ``precision: auto`` an
    unsupported half precision falls back to float32; an explicit one is refused."""
    if model.supports(getattr(torch, choice.precision)):
        return choice
    if runtime_setting(cfg)[1] == "auto":
        return dataclasses.replace(choice, precision="float32")
    raise BackendUnavailable(f"{model.path.name}: {model.architecture} does not support {choice.precision} "
                             "(its spandrel descriptor says so); use --precision float32")


def openvino_net(model: CustomModel, precision: str) -> Net:
    """``model`` on OpenVINO, its IR keyed by the file's sha256 (converted the first time), traced on a
    tile its size rules allow; height and width stay dynamic."""
    align = model.tile_alignment
    size = math.ceil(max(TRACE_SIZE, model.descriptor.size_requirements.minimum) / align) * align
    conversion = openvino_conversion(f"custom {model.architecture}", (model.path,),
                                     lambda device, dtype: model.descriptor.model, size)
    return compile_openvino(conversion, precision)


def failure_reason(exc: Exception) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:160]}" if lines else type(exc).__name__


class CustomBackend(TiledBackend):
    name = "custom"

    def __init__(self, cfg):
        self.model = custom_model(cfg)
        self.scale = self.model.scale
        self.scales = (self.model.scale,)
        self.choice = supported_choice(self.model, cfg, backend_choice("custom", cfg))
        self.ov_net = self._openvino_net(cfg) if self.choice.runtime == "openvino" else None
        if self.ov_net is None:
            self.dtype = getattr(torch, self.choice.precision)
            descriptor = self.model.descriptor
            if (self.choice.device, self.dtype) != ("cpu", torch.float32):  # the loaded copy is shared
                descriptor = copy.deepcopy(descriptor).to(self.choice.device, self.dtype)
            self.descriptor = descriptor

    def _openvino_net(self, cfg) -> Optional[Net]:
        """The model on OpenVINO; None, said once, and :attr:`choice` torch when it does not convert."""
        try:
            return openvino_net(self.model, self.choice.precision)
        # Anything spandrel builds may trip the tracer or meet an operation OpenVINO lacks, each with its
        # own exception type; the model still runs on torch.
        except Exception as exc:  # noqa: BLE001
            ir_cache.announce(f"{self.model.path.name}: OpenVINO could not convert {self.model.architecture} "
                              f"({failure_reason(exc)}); running on torch")
            self.choice = supported_choice(self.model, cfg, backend_choice("custom", cfg, "torch"))
            return None

    @classmethod
    def availability(cls, cfg) -> Availability:
        try:
            check_model_path(model_path(cfg))
        except (BackendUnavailable, ModelFileError) as exc:
            return Availability(False, str(exc))
        return Availability(True)

    @classmethod
    def model_key(cls, cfg):
        path = model_path(cfg).resolve()
        stat = path.stat()  # a file replaced under the same name is loaded again
        return str(path), stat.st_mtime_ns, stat.st_size, backend_choice("custom", cfg)

    @property
    def device(self) -> str:
        return self.choice.device

    def weight_files(self) -> list[Path]:
        return [self.model.path]

    def engine(self) -> dict[str, str]:
        return {"runtime": self.choice.runtime, "precision": self.choice.precision, "device": self.choice.device}

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        if self.ov_net is not None:  # tiles already meet the size rules (the spec's size_multiple)
            return self.ov_net(x).clamp_(0, 1)
        # spandrel pads to the architecture's size rules, crops the result back and clamps to [0, 1].
        out = self.descriptor(x.to(device=self.choice.device, dtype=self.dtype))
        # Copied: spandrel returns an inference-mode tensor, which the blending may not modify in place.
        return out.to(device="cpu", dtype=torch.float32, copy=True)
