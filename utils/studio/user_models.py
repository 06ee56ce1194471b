"""The studio's models folder: users' own model files, listed in the model picker as "Your models", and
uploads into it (:func:`store_upload`, where the server allows them).

A file is named in requests as ``custom:<file name>``; only plain names of files directly inside the
folder are accepted (no sub-folders, no ``..``, no symlink leading out of it). Each file is loaded and
checked once per version (:func:`utils.backends.custom_model.load_custom_model`), so one that cannot be
used is listed with the reason instead of failing a run.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Optional

from utils.backends.custom_model import SUFFIXES, CustomModel, ModelFileError, load_custom_model
from utils.checksums import file_sha256
from utils.config import WEIGHTS_DIR
from utils.studio.paths import PathRefused, is_inside

DEFAULT_MODELS_DIR = WEIGHTS_DIR / "models"
PREFIX = "custom:"
MAX_UPLOAD_BYTES = 1024 ** 3  # 1 GiB: the largest community models (HAT-L, DAT) are a few hundred MB


@dataclass(frozen=True)
class UserModel:
    """One file of the models folder: loaded, or the one-line reason it cannot be used."""

    file: str
    model: Optional[CustomModel]
    error: str = ""

    @property
    def value(self) -> str:
        return f"{PREFIX}{self.file}"

    @property
    def label(self) -> str:
        """What the picker shows: "Your model: 4x-foo.pth — ESRGAN ×4, 16.7 M parameters, 67.0 MB"."""
        return f"Your model: {self.file} — {self.model.summary() if self.model else 'cannot be used'}"

    def line(self) -> str:
        """One line of the Models panel."""
        return f"✓ **{self.file}**: {self.model.summary()}" if self.model else f"✗ **{self.file}**: {self.error}"

    def record(self) -> dict:
        """What the API's model list says about the file."""
        if self.model is None:
            return {"value": self.value, "file": self.file, "usable": False, "error": self.error}
        m = self.model
        return {"value": self.value, "file": self.file, "usable": True, "architecture": m.architecture,
                "scale": m.scale, "parameters": m.parameters, "bytes": m.file_size, "sha256": m.sha256}


def list_models(folder: Path) -> list[UserModel]:
    """The model files directly inside ``folder`` (none when it does not exist), by name."""
    if not folder.is_dir():
        return []
    entries = []
    for path in sorted(p for p in folder.iterdir()
                       if p.suffix.lower() in SUFFIXES and p.is_file() and not p.name.startswith(".")):
        try:
            entries.append(UserModel(path.name, load_custom_model(path)))
        except ModelFileError as exc:
            entries.append(UserModel(path.name, None, str(exc)))
    return entries


def find_model(folder: Path, value: str) -> Optional[UserModel]:
    """The listed entry whose picker value is ``value``, if the file is in the folder."""
    return next((m for m in list_models(folder) if m.value == value), None)


def is_user_model(backend: str) -> bool:
    return backend.startswith(PREFIX)


def model_file(folder: Path, value: str) -> Path:
    """The file that ``custom:<name>`` names inside ``folder``; PathRefused saying why not."""
    name = value.removeprefix(PREFIX)
    if not name or PurePath(name).name != name or "\\" in name or name.startswith("."):
        raise PathRefused(f"'{name}': name a model file directly inside the models folder")
    path = folder / name
    if not path.is_file():
        raise PathRefused(f"'{name}' is not in the models folder; put the file there (it is listed under "
                          "“Your models”)")
    if not is_inside(path, folder):
        raise PathRefused(f"'{name}' leads outside the models folder")
    return path



def store_upload(upload: Path, folder: Path, name: str) -> UserModel:
    """Check an uploaded model file (``name``: the user's file name) and store it in ``folder`` as
    "<name>-<sha256 prefix><suffix>"; the same content is stored once. ModelFileError when it is too large
    or cannot be used: then nothing is stored."""
    suffix = PurePath(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise ModelFileError(f"{name}: not a model file this program reads; use one of {', '.join(SUFFIXES)}")
    if upload.stat().st_size > MAX_UPLOAD_BYTES:
        raise ModelFileError(f"{name}: {upload.stat().st_size / 1e6:.0f} MB is over the upload limit of "
                             f"{MAX_UPLOAD_BYTES / 1e6:.0f} MB; put it in the models folder instead")
    sha256 = file_sha256(upload)
    folder.mkdir(parents=True, exist_ok=True)
    for path in folder.glob(f"*-{sha256[:12]}{suffix}"):
        if file_sha256(path) == sha256:
            return UserModel(path.name, load_custom_model(path))
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", PurePath(name).stem)[:60].strip("_") or "model"
    target = folder / f"{stem}-{sha256[:12]}{suffix}"
    staged = folder / f".upload-{sha256[:12]}{suffix}"  # hidden (not listed) until it has passed the checks
    shutil.copyfile(upload, staged)
    try:
        load_custom_model(staged)
    except ModelFileError as exc:
        staged.unlink()
        raise ModelFileError(str(exc).replace(staged.name, name)) from None
    os.replace(staged, target)
    return UserModel(target.name, load_custom_model(target))
