"""The ``custom`` backend: a user's own model file (``custom.model_path``), any architecture spandrel
detects, run through the same context-margin tiling, post-processing and resume records as the packaged
models. Its spec is the file's (:func:`file_spec`): its one native scale, and the context margin and
tile alignment of its architecture (:func:`utils.backends.custom_model.context_margin`,
:func:`~utils.backends.custom_model.tile_alignment`).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Optional

import torch

from utils.backends.base import Availability, BackendUnavailable, TiledBackend
from utils.backends.custom_model import CustomModel, ModelFileError, check_model_path, load_custom_model
from utils.config import runtime_setting
from utils.runtimes.policy import Choice, RuntimeRefused, choose
from utils.settings import FILE_SPECS, SPECS, BackendSpec

DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


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


def runtime_choice(cfg) -> Choice:
    try:
        return choose("custom", SPECS["custom"].runtimes, *runtime_setting(cfg))
    except RuntimeRefused as exc:
        raise BackendUnavailable(str(exc)) from None


def choose_dtype(model: CustomModel, cfg) -> tuple[torch.device, torch.dtype]:
    """The device and the precision the runtime policy picks (``precision``), where the model's descriptor
    supports it. With ``precision: auto`` an unsupported half precision falls back to float32; an
    explicit one is refused."""
    choice = runtime_choice(cfg)
    dtype = getattr(torch, choice.precision)
    if model.supports(dtype):
        return torch.device(choice.device), dtype
    if runtime_setting(cfg)[1] == "auto":
        return torch.device(choice.device), torch.float32
    raise BackendUnavailable(f"{model.path.name}: {model.architecture} does not support {choice.precision} "
                             "(its spandrel descriptor says so); use --precision float32")


class CustomBackend(TiledBackend):
    name = "custom"

    def __init__(self, cfg):
        self.model = custom_model(cfg)
        self._device, self.dtype = choose_dtype(self.model, cfg)
        descriptor = self.model.descriptor
        if (self._device.type, self.dtype) != ("cpu", torch.float32):  # the loaded copy is shared
            descriptor = copy.deepcopy(descriptor).to(self._device, self.dtype)
        self.descriptor = descriptor
        self.scale = self.model.scale
        self.scales = (self.model.scale,)

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
        return str(path), stat.st_mtime_ns, stat.st_size, runtime_choice(cfg)

    @property
    def device(self) -> str:
        return str(self._device)

    def weight_files(self) -> list[Path]:
        return [self.model.path]

    def engine(self) -> dict[str, str]:
        return {"runtime": "torch", "precision": DTYPE_NAMES[self.dtype], "device": self._device.type}

    def _patch(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        # spandrel pads to the architecture's size rules, crops the result back and clamps to [0, 1].
        out = self.descriptor(x.to(device=self._device, dtype=self.dtype))
        # Copied: spandrel returns an inference-mode tensor, which the blending may not modify in place.
        return out.to(device="cpu", dtype=torch.float32, copy=True)
