"""sha256 of files: weight sources are checked before use, and resume records name their input and
every weight file by it."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from datapipe.image_io import write_atomic


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of the file's bytes, read in 1 MiB blocks (weights run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _cache_file() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sr-studio" / "sha256.json"


_memo: dict[str, str] = {}
_memo_lock = threading.Lock()


def _stamp(path: Path) -> str:
    """What identifies a file's bytes without reading them: path, size and modification time."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def cached_file_sha256(path: str | Path) -> str:
    """:func:`file_sha256`, remembered by path + size + mtime in the user's cache folder, so a rerun does
    not hash gigabytes of weights again. A cache that cannot be read or written is only slower."""
    stamp = _stamp(Path(path))
    with _memo_lock:
        if not _memo:
            try:
                _memo.update(json.loads(_cache_file().read_text()))
            except (OSError, ValueError):
                pass
        if stamp in _memo:
            return _memo[stamp]
    digest = file_sha256(path)
    with _memo_lock:
        _memo[stamp] = digest
        try:
            write_atomic(_cache_file(), json.dumps(_memo).encode())
        except OSError:
            pass
    return digest


def weights_sha256(path: str | Path) -> str:
    """sha256 of a weight file; of a folder (a diffusers model), the sha256 of its files' relative names
    and sha256s, so any changed, added or removed file changes it."""
    path = Path(path)
    if path.is_file():
        return cached_file_sha256(path)
    listing = "".join(f"{f.relative_to(path).as_posix()}\0{cached_file_sha256(f)}\n"
                      for f in sorted(path.rglob("*")) if f.is_file() and not f.name.startswith("."))
    return hashlib.sha256(listing.encode()).hexdigest()
