"""Find (and on request download) the two InvSR weight sets: SD-Turbo and the noise predictor.

Lookup order for each: the explicit path from the config (the CLI's --sd_path / --started_ckpt_path
land in ``sd_pipe.params.pretrained_model_name_or_path`` / ``model_start.ckpt_path``), the project's
``weights/`` folder, the Hugging Face cache, and only when explicitly asked, a download. Lookups never
touch the network, so availability checks are instant offline.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig

from utils.config import WEIGHTS_DIR

SD_REPO = "stabilityai/sd-turbo"
NP_REPO = "OAOA/InvSR"
NP_FILE = "noise_predictor_sd_turbo_v5.pth"
SD_LOCAL_DIR = WEIGHTS_DIR / "sd-turbo"
NP_LOCAL_FILE = WEIGHTS_DIR / NP_FILE
# Only the diffusers components the sampler loads (full precision); the repo also holds a 5 GB
# single-file checkpoint and fp16 variants that would triple the download.
SD_ALLOW_PATTERNS = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "tokenizer/*",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
# Seconds to wait for the hub before declaring it unreachable (huggingface_hub itself retries for ~25 s).
PROBE_TIMEOUT = 5.0
SD_HINT = "run `python scripts/download_weights.py` or pass --sd_path DIR (a diffusers-layout sd-turbo folder)"
NP_HINT = f"run `python scripts/download_weights.py` or pass --started_ckpt_path FILE ({NP_FILE})"


class WeightsNotFound(RuntimeError):
    """InvSR weights are not available locally (and were not, or could not be, downloaded)."""

    def __init__(self, problems: list[str], detail: str = ""):
        self.problems = problems
        super().__init__("InvSR: " + "; ".join(problems) + (f". {detail}" if detail else ""))


@dataclass(frozen=True)
class InvSRWeights:
    sd_dir: Path  # diffusers layout: vae/, unet/, text_encoder/, tokenizer/, scheduler/
    noise_predictor: Path  # state dict (.pth)


def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    return flag or bool(constants.HF_HUB_OFFLINE)


def _cache_dir(cfg: DictConfig) -> Optional[str]:
    value = cfg.sd_pipe.params.get("cache_dir")
    return str(Path(value).expanduser()) if value else None


def sd_dir_problems(folder: Path) -> list[str]:
    """What a diffusers sd-turbo folder lacks (empty when complete)."""
    missing = []
    for sub in ("vae", "unet", "text_encoder"):
        d = folder / sub
        if not (d / "config.json").is_file():
            missing.append(f"{sub}/config.json")
        if not any(d.glob("*.safetensors")) and not any(d.glob("*.bin")):
            missing.append(f"{sub}/ weights")
    missing += [f"tokenizer/{n}" for n in ("vocab.json", "merges.txt") if not (folder / "tokenizer" / n).is_file()]
    if not (folder / "scheduler" / "scheduler_config.json").is_file():
        missing.append("scheduler/scheduler_config.json")
    return missing


def _looks_like_repo_id(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+", value)) and not value.startswith((".", "/", "~"))


def _sd_repo(cfg: DictConfig) -> str:
    return str(cfg.sd_pipe.params.get("pretrained_model_name_or_path") or SD_REPO)


def _find_sd(cfg: DictConfig) -> tuple[Optional[Path], str]:
    """(complete local folder or None, why not found). Raises for a broken explicit folder."""
    value = _sd_repo(cfg)
    explicit = Path(value).expanduser()
    if explicit.is_dir():
        problems = sd_dir_problems(explicit)
        if problems:
            raise WeightsNotFound([f"--sd_path {explicit} is not a complete diffusers sd-turbo folder "
                                   f"(missing {', '.join(problems)})"])
        return explicit.resolve(), ""
    if not _looks_like_repo_id(value):
        raise WeightsNotFound([f"--sd_path {value}: no such directory"])
    if value == SD_REPO and SD_LOCAL_DIR.is_dir() and not sd_dir_problems(SD_LOCAL_DIR):
        return SD_LOCAL_DIR.resolve(), ""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        cached = Path(snapshot_download(value, cache_dir=_cache_dir(cfg), local_files_only=True))
    except LocalEntryNotFoundError:
        return None, f"SD-Turbo weights ({value}) not found in {SD_LOCAL_DIR} or the Hugging Face cache; {SD_HINT}"
    problems = sd_dir_problems(cached)
    if problems:
        return None, f"SD-Turbo weights ({value}) are incomplete in the Hugging Face cache (missing {', '.join(problems)}); {SD_HINT}"
    return cached, ""


def _find_np(cfg: DictConfig) -> tuple[Optional[Path], str]:
    value = cfg.model_start.get("ckpt_path")
    if value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise WeightsNotFound([f"--started_ckpt_path {path}: file not found"])
        return path.resolve(), ""
    if NP_LOCAL_FILE.is_file():
        return NP_LOCAL_FILE.resolve(), ""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(NP_REPO, NP_FILE, cache_dir=_cache_dir(cfg))
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached), ""
    return None, f"noise predictor ({NP_REPO} {NP_FILE}) not found in {WEIGHTS_DIR} or the Hugging Face cache; {NP_HINT}"


def resolve_weights(cfg: DictConfig) -> InvSRWeights:
    """Local weights only (no network, no model loading); raises :class:`WeightsNotFound` naming what
    is missing and how to supply it."""
    sd, why_sd = _find_sd(cfg)
    ckpt, why_np = _find_np(cfg)
    problems = [p for p in (why_sd, why_np) if p]
    if problems:
        raise WeightsNotFound(problems)
    return InvSRWeights(sd, ckpt)


def resolve_sd_dir(cfg: DictConfig) -> Path:
    """The local SD-Turbo folder alone, for callers that bring their own noise predictor (training);
    raises :class:`WeightsNotFound` like :func:`resolve_weights`."""
    sd, why = _find_sd(cfg)
    if sd is None:
        raise WeightsNotFound([why])
    return sd


def _hub_reachable() -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=PROBE_TIMEOUT)
    except Exception:  # any transport failure (DNS, refused, timeout, proxy) means: not reachable
        return False
    return True


def download_weights(cfg: DictConfig, local_dir: Optional[Path] = None) -> InvSRWeights:
    """Fetch whatever :func:`resolve_weights` cannot find (SD-Turbo components and the noise predictor).

    Downloads go to the Hugging Face cache (``sd_pipe.params.cache_dir`` or the default), or into
    ``local_dir`` (e.g. the project's ``weights/``) when given. Explicit paths in the config are never
    downloaded over. Raises :class:`WeightsNotFound` when offline or the hub is unreachable.
    """
    sd, _ = _find_sd(cfg)
    ckpt, _ = _find_np(cfg)
    if sd is not None and ckpt is not None and local_dir is None:
        return InvSRWeights(sd, ckpt)
    if _offline():
        raise WeightsNotFound(["cannot download: HF_HUB_OFFLINE is set"],
                              "Unset it, or supply the files with --sd_path DIR and --started_ckpt_path FILE")
    if not _hub_reachable():
        from huggingface_hub import constants

        raise WeightsNotFound([f"cannot download: {constants.ENDPOINT} is not reachable"],
                              "Connect to the internet (or set HF_ENDPOINT to a mirror), or supply the files "
                              "with --sd_path DIR and --started_ckpt_path FILE")
    from huggingface_hub import hf_hub_download, snapshot_download

    cache_dir = _cache_dir(cfg)
    if sd is None or local_dir is not None:
        target = Path(local_dir) / "sd-turbo" if local_dir is not None else None
        sd = Path(snapshot_download(_sd_repo(cfg), cache_dir=cache_dir, local_dir=target,
                                    allow_patterns=SD_ALLOW_PATTERNS))
    if ckpt is None or local_dir is not None:
        ckpt = Path(hf_hub_download(NP_REPO, NP_FILE, cache_dir=cache_dir, local_dir=local_dir))
    return InvSRWeights(sd, ckpt)
