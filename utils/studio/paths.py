"""Confine user-given paths to a root folder (the app's batch root), with messages a user can act on
(which name folders relative to the root, never by their path on the server)."""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePath, PureWindowsPath
from typing import Callable


class PathRefused(ValueError):
    """A user-given path that is not allowed; the message says why."""


def is_inside(path: os.PathLike | str, root: os.PathLike | str) -> bool:
    """Whether ``path`` lies in ``root`` (or is it) once both have all symlinks resolved."""
    real, real_root = Path(path).resolve(), Path(root).resolve()
    return real == real_root or real_root in real.parents


def resolve_folder(root: os.PathLike | str, user_path: str) -> Path:
    """The existing folder ``user_path`` names inside ``root``, with symlinks resolved.

    ``user_path`` is relative to ``root`` (empty means ``root`` itself); an absolute path is accepted
    only if it lies in ``root``. Any ``..`` component is refused outright, even one that would land back
    inside, and so is a path that leaves ``root`` through a symlink.
    """
    text = (user_path or "").strip()
    if "\x00" in text:
        raise PathRefused("the folder name contains a NUL character")
    parts = PurePath(text).parts
    if ".." in parts:
        raise PathRefused(f"'{text}': '..' is not allowed; name a folder inside the batch root")
    root = Path(root)
    absolute = PurePath(text).is_absolute()
    candidate = Path(text) if absolute else root / text
    if absolute and not is_inside(candidate, root):
        raise PathRefused(f"'{text}' is outside the batch root; name a folder inside it")
    if not candidate.exists():
        raise PathRefused(f"'{text or '.'}': no such folder in the batch root")
    if not is_inside(candidate, root):
        raise PathRefused(f"'{text}' leads outside the batch root (through a symbolic link); refused")
    if not candidate.is_dir():
        raise PathRefused(f"'{text}' is a file, not a folder; name a folder inside the batch root")
    return candidate.resolve()



def _member_problem(info: zipfile.ZipInfo) -> str | None:
    """Why a zip member must not be extracted, or None."""
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or PureWindowsPath(name).drive:
        return "has an absolute path"
    if ".." in PurePath(name).parts:
        return "contains '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "is a symbolic link"
    return None


def extract_zip(archive: os.PathLike | str, dest: os.PathLike | str, max_bytes: int, max_members: int,
                keep: Callable[[str], bool] = lambda name: True) -> list[Path]:
    """Extract the members of ``archive`` that ``keep`` accepts into ``dest``; returns their paths.

    The whole archive is refused before anything is written if any member is absolute, contains ``..``
    or is a symlink, or if it holds more than ``max_members`` entries or more than ``max_bytes``
    uncompressed by the sizes its directory declares. Those sizes bound what is written: zipfile stops
    each member at its declared size and checks its CRC at that point, so a member whose size lies is a
    corrupt archive, refused like any other, with the files copied so far removed.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise PathRefused(f"{archive.name}: {len(infos):,} entries, more than the limit of {max_members:,}")
            for info in infos:
                problem = _member_problem(info)
                if problem:
                    raise PathRefused(f"{archive.name}: member '{info.filename}' {problem}; archive refused")
            wanted = [i for i in infos if not i.is_dir() and keep(i.filename)]
            if sum(i.file_size for i in wanted) > max_bytes:
                raise PathRefused(f"{archive.name}: uncompressed size is over the limit of {max_bytes:,} bytes")
            return _copy_members(zf, wanted, dest)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, RuntimeError) as exc:
        raise PathRefused(f"{archive.name}: not a readable zip archive ({exc})") from exc


def _copy_members(zf: zipfile.ZipFile, infos: list[zipfile.ZipInfo], dest: Path) -> list[Path]:
    """Copy ``infos`` under ``dest``; if any fails, the files written so far are removed (folders stay)."""
    written: list[Path] = []
    try:
        for info in infos:
            target = dest / PurePath(info.filename.replace("\\", "/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            written.append(target)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written
