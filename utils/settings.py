"""What a run is made of, below every module that uses it: the declaration of each backend
(:class:`BackendSpec`) and the settings of one run (:class:`RunSettings`).

A backend's spec is the one place that says which settings it reads (by CLI flag name), its native
scales and size needs, the runtimes and precisions it can run in, and its default tile size and context
margin. Config validation, the CLI's refusals, the studio's greyed controls and the API's errors are
all derived from it, so they cannot disagree.

A backend owns models only; every call gets a :class:`RunSettings`, an immutable value made from a
validated config for one backend. The same object drives the tensor pipeline, the batch layer and its
resume records, so what is recorded is exactly what ran.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Mapping, Optional

from omegaconf import DictConfig, OmegaConf

from utils.config import OUTSCALE_RANGE, PRECISIONS, RUNTIMES, ConfigError, general_problems, names_list, \
    resolve_timesteps, runtime_setting
from utils.runtimes.policy import RuntimeRefused, choose

# Settings every backend reads, by flag name. A stage's own parameters (min/max overlap, fusion method)
# count only while the stage is on: they are read wherever the stage is.
COMMON_SETTINGS = frozenset({"color_fix", "outscale", "width", "height", "format", "quality", "chopping_bs",
                             "smart_chopping", "min_overlap", "max_overlap", "edge_enhancement", "fusion_method",
                             "runtime", "precision"})
# Attention fusion blends the model's detail with the bicubic upsampling: a no-op for bicubic itself.
FUSION = frozenset({"attention_fusion"})
TILING = frozenset({"tile_size", "overlap"})
# The settings that switch a post-processing stage on; off is their unset value.
STAGES = ("adaptive_scheduler", "adaptive_guidance", "attention_fusion")
TORCH_PRECISIONS = ("float32", "bfloat16", "float16")
# OpenVINO's CPU plugin: bfloat16 where it lists BF16, float16 where it lists FP16 (utils.runtimes.policy).
OPENVINO_PRECISIONS = ("float32", "bfloat16", "float16")
POSTPROCESS_SETTINGS = ("adaptive_scheduler", "smart_chopping", "min_overlap", "max_overlap", "attention_fusion",
                        "fusion_method", "edge_enhancement", "adaptive_guidance")
# Setting (flag name) -> the config key it sets; tile_size and overlap set keys of the chosen backend
# (:func:`config_key`).
CONFIG_KEYS = MappingProxyType({
    "num_steps": "num_steps", "timesteps": "timesteps", "chopping_bs": "basesr.chopping.extra_bs",
    "color_fix": "color_fix", "seed": "seed", "outscale": "outscale", "width": "output.width",
    "height": "output.height", "format": "output.format", "quality": "output.quality", "threads": "threads",
    "runtime": "runtime", "precision": "precision", "sd_path": "sd_pipe.params.pretrained_model_name_or_path",
    "started_ckpt_path": "model_start.ckpt_path", "denoise": "waifu2x.denoise", "model": "custom.model_path",
    **{key: f"postprocess.{key}" for key in POSTPROCESS_SETTINGS},
})


@dataclass(frozen=True)
class MemoryCost:
    """What producing one image costs a backend beyond its loaded model and the output pixels, in
    bytes: ``fixed`` (libraries' pools, first-use buffers) and ``per_tile_pixel`` for each output pixel
    of the tiles (patches) in one model call (the model's activations). Measured by
    scripts/measure_memory.py (docs/benchmarks.md, "Memory per image")."""

    fixed: float
    per_tile_pixel: float


MB = 2 ** 20


@dataclass(frozen=True)
class BackendSpec:
    """One backend's declaration (in the spirit of spandrel's ``ModelDescriptor``)."""

    name: str
    scales: tuple[int, ...]          # native scales, ascending; the last is what outscale 4 runs at
    reads: frozenset[str]            # every setting it reads, by CLI flag name (weight paths included)
    runtimes: Mapping[str, tuple[str, ...]]  # runtime -> precisions it can run in
    tile_size: int                   # default tile (InvSR: patch) size, input pixels
    tile_key: str                    # the config key of the tile size
    memory: MemoryCost               # working memory beyond the output pixels (utils.pipeline.limits)
    context_margin: Optional[int] = None  # input pixels of context per tile side; None: patches overlap by half
    size_multiple: int = 1           # input sides are padded to a multiple of this
    min_size: int = 1                # smaller inputs are padded up to this
    # (input pixels from which, tile size): the default tile size for large inputs (InvSR's reference).
    large_input_tile: Optional[tuple[int, int]] = None
    # The config key of a model file whose own spec (:data:`FILE_SPECS`) replaces this one: scales,
    # margin and size multiple are the file's.
    model_file_key: Optional[str] = None

    @property
    def scale(self) -> int:
        return self.scales[-1]

    @property
    def margin_key(self) -> Optional[str]:
        return None if self.context_margin is None else f"{self.name}.tile_margin"

    def native_scale(self, outscale: float) -> int:
        """The smallest native scale that reaches ``outscale`` (a ×2 model for outscale 2, not ×4 and a
        downscale)."""
        return next((s for s in self.scales if s >= outscale), self.scale)

    def default_tile_size(self, h: int, w: int) -> int:
        if self.large_input_tile is not None and h * w >= self.large_input_tile[0]:
            return self.large_input_tile[1]
        return self.tile_size


def _spec(name: str, scales: tuple[int, ...], reads: frozenset[str], runtimes: dict, tile_size: int,
          memory: MemoryCost, **kwargs) -> BackendSpec:
    return BackendSpec(name, scales, COMMON_SETTINGS | reads, MappingProxyType(runtimes), tile_size,
                       kwargs.pop("tile_key", f"{name}.tile_size"), memory, **kwargs)


# ncnn first: the CPU default where OpenVINO has no BF16 (utils.runtimes.policy).
CONVERTED_NCNN = {"ncnn": ("float32",), "openvino": OPENVINO_PRECISIONS, "torch": TORCH_PRECISIONS}
SPECS: Mapping[str, BackendSpec] = MappingProxyType({spec.name: spec for spec in (
    _spec("invsr", (4,), FUSION | {"tile_size", "num_steps", "timesteps", "seed", "adaptive_scheduler",
                                   "adaptive_guidance", "cfg_scale", "sd_path",
                                   "started_ckpt_path"},
          {"openvino": OPENVINO_PRECISIONS, "torch": TORCH_PRECISIONS}, 128,
          # An estimate (SD-Turbo's weights are not on the measuring machine): per patch the VAE's encoding
          # and decoding dominate (SD-Turbo's VAE shape, random weights: 121 MB + 2,795 B per patch output
          # pixel); blending and post-processing as for bicubic.
          MemoryCost((121 + 132) * MB, 2795),
          tile_key="basesr.chopping.pch_size", size_multiple=8, large_input_tile=(512 ** 2, 256)),
    # x4plus: tiles of up to 532 px at the default 448 (~4.5 GB peak with ncnn). RRDBNet's influence fades
    # within 40 px: 64-px tiles stay ≥ 45 dB from the whole image on textured images (docs/benchmarks.md).
    _spec("realesrgan", (4,), FUSION | TILING, CONVERTED_NCNN, 448,
          MemoryCost(61 * MB, 910), context_margin=40),
    _spec("span", (2, 4), FUSION | TILING, CONVERTED_NCNN, 512, MemoryCost(73 * MB, 280), context_margin=22),
    # 18 stacked 3×3 convolutions plus a nearest-upsampled skip: exact beyond 18 px.
    _spec("realesrgan-anime", (4,), FUSION | TILING, CONVERTED_NCNN, 512, MemoryCost(72 * MB, 208),
          context_margin=20),
    # ×4 runs its second ×2 pass on a 2× tile: ~2 GB peak at 256, ~7.6 GB at 512.
    _spec("waifu2x", (2, 4), FUSION | TILING | {"denoise"}, CONVERTED_NCNN, 256, MemoryCost(96 * MB, 1637),
          context_margin=12),
    _spec("bicubic", (4,), TILING, {"torch": ("float32",)}, 1024, MemoryCost(0, 76), context_margin=2),
    # A user's model file: its scale, context margin and tile alignment (size_multiple) are the file's,
    # in the spec :func:`spec_for` makes; these are the ones it can have. 448-px tiles: with ESRGAN's
    # 40-px margin at most 1.4× the pixels of one forward. Memory: not measured per file; x4plus's
    # (ESRGAN, the commonest architecture of community models).
    # OpenVINO where the file converts (torch otherwise, said once); torch first: the default without BF16.
    _spec("custom", (1, 2, 3, 4, 8), FUSION | TILING | {"model"},
          {"torch": TORCH_PRECISIONS, "openvino": OPENVINO_PRECISIONS}, 448, MemoryCost(61 * MB, 910), context_margin=64, model_file_key="custom.model_path"),
)})
# Backend -> its spec for a model file (ValueError saying why the file cannot be used), registered by the
# backend's module (utils.backends.custom), which reads files: a layer above this one.
FILE_SPECS: dict[str, Callable[[Optional[str]], BackendSpec]] = {}
TILED_BACKENDS = tuple(name for name, spec in SPECS.items() if spec.context_margin is not None)
# Settings at least one backend reads and another does not.
BACKEND_SPECIFIC = frozenset().union(*(s.reads for s in SPECS.values())) - frozenset.intersection(
    *(s.reads for s in SPECS.values()))


def spec_for(backend: str, model_path: Optional[str] = None) -> BackendSpec:
    """``backend``'s spec; for one whose spec is its model file's, that of ``model_path`` (ValueError
    saying why the file cannot be used)."""
    spec = SPECS[backend]
    if spec.model_file_key is None:
        return spec
    if backend not in FILE_SPECS:
        raise ValueError(f"the {backend} backend's spec comes from its model file: import utils.backends first")
    return FILE_SPECS[backend](model_path)


def model_path(cfg: DictConfig, backend: str) -> Optional[str]:
    """The model file whose spec a run of ``backend`` uses (the custom backend's), else None."""
    key = SPECS[backend].model_file_key
    path = None if key is None else OmegaConf.select(cfg, key)
    return None if path is None else str(path)


def is_unset(value: Any) -> bool:
    """None, "" (no timesteps) and False (a stage switched off) mean "not set": 0 is a value."""
    return value is None or value is False or value == ""


def unread_settings(values: Mapping[str, Any], backend: str) -> list[str]:
    """The settings (flag names) set in ``values`` that ``backend`` does not read, in sorted order."""
    reads = SPECS[backend].reads
    return sorted(k for k in BACKEND_SPECIFIC if k not in reads and not is_unset(values.get(k)))


def config_key(setting: str, backend: str) -> Optional[str]:
    """The config key a setting sets for ``backend`` (None: the backend has no such key)."""
    spec = SPECS[backend]
    return {"tile_size": spec.tile_key, "overlap": spec.margin_key}.get(setting, CONFIG_KEYS.get(setting))


def unread_message(setting: str, backend: str) -> str:
    """"sd_path applies only to invsr, not span"."""
    return f"{setting} applies only to {names_list(readers(setting))}, not {backend}"


def readers(setting: str) -> list[str]:
    """The backends that read ``setting``, in registry order."""
    return [name for name, spec in SPECS.items() if setting in spec.reads]


def config_problems(cfg: DictConfig, backend: str) -> list[str]:
    """Every problem of ``cfg`` for a run of ``backend``, one message each: the config's own values, the
    stages switched on that the backend does not read, a tile size or margin it cannot use, and a
    runtime/precision that cannot run it here."""
    try:
        spec = spec_for(backend, model_path(cfg, backend))
    except ValueError as exc:
        return general_problems(cfg) + [str(exc)]
    problems = general_problems(cfg, spec.scale) + [unread_message(stage, backend).replace("_", " ", 1)
                                                    for stage in STAGES
                                                    if cfg.postprocess[stage] and stage not in spec.reads]
    runtime, precision = runtime_setting(cfg)
    if runtime in RUNTIMES and precision in PRECISIONS:
        try:
            choose(backend, spec.runtimes, runtime, precision)
        except RuntimeRefused as exc:
            problems.append(str(exc))
    tile = OmegaConf.select(cfg, spec.tile_key)
    if tile is not None and (not _is_int(tile) or tile < 16 or tile % spec.size_multiple):
        multiple = f" and a multiple of {spec.size_multiple}" if spec.size_multiple > 1 else ""
        problems.append(f"{spec.tile_key} must be null (the model's default) or an integer ≥ 16{multiple} "
                        f"(got {tile!r})")
    if spec.margin_key is not None:
        margin = OmegaConf.select(cfg, spec.margin_key)
        if margin is not None and (not _is_int(margin) or margin < 0):
            problems.append(f"{spec.margin_key} must be null (the model's default) or an integer ≥ 0 "
                            f"(got {margin!r})")
    return problems


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _flag(name: str, in_output: bool = True) -> dict:
    """Field metadata: the setting's flag name, and whether it changes the output file."""
    return {"flag": name, "in_output": in_output}


@dataclass(frozen=True)
class RunSettings:
    """Everything one run needs besides the models. Sizes are in input pixels.

    Every field names the setting (flag) it comes from; a field whose setting the backend does not read
    keeps its config value but is left out of the resume record.
    """

    backend: str = field(metadata=_flag("backend"))
    timesteps: tuple[int, ...] = field(metadata=_flag("timesteps"))    # InvSR, descending
    seed: int = field(metadata=_flag("seed"))                           # InvSR
    cfg_scale: float = field(metadata=_flag("cfg_scale"))               # InvSR guidance (≤ 1: none)
    # Tile (InvSR: patch) size; None: the backend's default for the input's size (:meth:`for_input`).
    tile_size: Optional[int] = field(metadata=_flag("tile_size"))
    tile_margin: Optional[int] = field(metadata=_flag("overlap"))       # context px per tile side; None: the model's
    batch_size: int = field(metadata=_flag("chopping_bs", in_output=False))  # patches per model call
    color_fix: str = field(metadata=_flag("color_fix"))
    smart_chopping: bool = field(metadata=_flag("smart_chopping"))
    min_overlap: float = field(metadata=_flag("min_overlap"))           # smart chopping, fraction of a patch
    max_overlap: float = field(metadata=_flag("max_overlap"))
    adaptive_scheduler: bool = field(metadata=_flag("adaptive_scheduler"))
    adaptive_guidance: bool = field(metadata=_flag("adaptive_guidance"))
    attention_fusion: bool = field(metadata=_flag("attention_fusion"))
    fusion_method: str = field(metadata=_flag("fusion_method"))
    edge_enhancement: float = field(metadata=_flag("edge_enhancement"))  # strength in [0, 1]; 0 = off
    outscale: float = field(metadata=_flag("outscale"))
    # A target size instead of outscale: :meth:`for_input` turns it into the input's factor.
    target_width: Optional[int] = field(metadata=_flag("width"))
    target_height: Optional[int] = field(metadata=_flag("height"))
    output_format: str = field(metadata=_flag("format"))  # when the output path has no extension
    quality: int = field(metadata=_flag("quality"))
    max_input_pixels: int = field(metadata=_flag("max_input_pixels", in_output=False))
    max_output_pixels: int = field(metadata=_flag("max_output_pixels", in_output=False))  # native scale
    max_memory_mb: int = field(metadata=_flag("max_memory_mb", in_output=False))
    # custom: the user's model file (the records name it by its sha256, with the weights)
    model_path: Optional[str] = field(default=None, metadata=_flag("model", in_output=False))

    @property
    def spec(self) -> BackendSpec:
        return spec_for(self.backend, self.model_path)

    @classmethod
    def from_config(cls, cfg: DictConfig, backend: str) -> "RunSettings":
        """Validate ``cfg`` for ``backend`` (ConfigError naming every problem) and take its values."""
        if backend not in SPECS:
            raise ConfigError(f"unknown backend '{backend}'; choose one of {', '.join(SPECS)}")
        problems = config_problems(cfg, backend)
        if problems:
            raise ConfigError("; ".join(problems))
        spec, pp = spec_for(backend, model_path(cfg, backend)), cfg.postprocess
        tile = OmegaConf.select(cfg, spec.tile_key)
        margin = None if spec.margin_key is None else OmegaConf.select(cfg, spec.margin_key)
        return cls(
            backend=backend,
            timesteps=tuple(resolve_timesteps(cfg)),
            seed=int(cfg.seed),
            cfg_scale=float(cfg.cfg_scale),
            tile_size=None if tile is None else int(tile),
            tile_margin=spec.context_margin if spec.context_margin is not None and margin is None else margin,
            batch_size=int(cfg.basesr.chopping.extra_bs),
            color_fix=str(cfg.color_fix or "none"),
            smart_chopping=bool(pp.smart_chopping),
            min_overlap=float(pp.min_overlap),
            max_overlap=float(pp.max_overlap),
            adaptive_scheduler=bool(pp.adaptive_scheduler),
            adaptive_guidance=bool(pp.adaptive_guidance),
            attention_fusion=bool(pp.attention_fusion),
            fusion_method=str(pp.fusion_method),
            edge_enhancement=float(pp.edge_enhancement),
            outscale=float(cfg.outscale),
            target_width=cfg.output.width,
            target_height=cfg.output.height,
            output_format=str(cfg.output.format),
            quality=int(cfg.output.quality),
            max_input_pixels=int(cfg.limits.max_input_pixels),
            max_output_pixels=int(cfg.limits.max_output_pixels),
            max_memory_mb=int(cfg.limits.max_memory_mb),
            model_path=model_path(cfg, backend),
        )

    def replace(self, **changes: Any) -> "RunSettings":
        return dataclasses.replace(self, **changes)

    def for_input(self, h: int, w: int) -> "RunSettings":
        """These settings as they apply to an h×w input: the tile size the backend uses (the chosen one,
        else its default for that size) and the factor a target width or height gives (ConfigError when it
        is outside 1-4)."""
        changes = {}
        if self.tile_size is None:
            changes["tile_size"] = self.spec.default_tile_size(h, w)
        for target, side, name in ((self.target_width, w, "width"), (self.target_height, h, "height")):
            if target is not None:
                changes["outscale"] = factor = target / side
                low, high = OUTSCALE_RANGE[0], max(OUTSCALE_RANGE[1], self.spec.scale)  # a ×8 model: up to 8
                if not low <= factor <= high:
                    raise ConfigError(f"a target {name} of {target} px is ×{factor:.3g} of this {side}-px {name}; "
                                      f"the factor must be {low:g} to {high:g}")
        return self.replace(**changes) if changes else self

    def native_scale(self) -> int:
        return self.spec.native_scale(self.outscale)

    def record(self, output_format: Optional[str] = None) -> dict[str, Any]:
        """The settings that change the output file, for resume records (JSON-ready): those the backend
        reads, of the stages that are on, with the format actually written (``output_format``, from the
        output's extension) and its quality where the format has one."""
        fmt = output_format or self.output_format
        out = {}
        for f in dataclasses.fields(self):
            flag = f.metadata["flag"]
            if not f.metadata["in_output"] or (flag in BACKEND_SPECIFIC and flag not in self.spec.reads):
                continue
            out[f.name] = list(self.timesteps) if f.name == "timesteps" else getattr(self, f.name)
        out["output_format"] = fmt
        for name, needed in (("min_overlap", self.smart_chopping), ("max_overlap", self.smart_chopping),
                             ("fusion_method", self.attention_fusion), ("quality", fmt != "png")):
            if not needed:
                out.pop(name, None)
        return out
