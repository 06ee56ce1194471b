"""Which output file each input gets: one name per input, never an input's own path."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from datapipe.image_io import ImageError, is_image_file, list_images


def output_name(src: Path, fmt: str) -> str:
    return f"{src.stem}.{fmt.lower().replace('jpeg', 'jpg')}"


def plan_outputs(sources: Iterable[Path], out_dir: Path, fmt: str) -> list[tuple[Path, Path]]:
    """(source, output) pairs; sources sharing a stem (a.png, a.jpg) keep their extension in the name."""
    sources = list(sources)
    stems = [s.stem for s in sources]
    pairs = []
    for src in sources:
        name = output_name(src, fmt)
        if stems.count(src.stem) > 1:
            name = f"{src.stem}_{src.suffix.lstrip('.').lower()}.{name.rsplit('.', 1)[1]}"
        pairs.append((src, out_dir / name))
    return pairs


def plan_paths(in_path: Path, out_path: Path, fmt: str, recursive: bool = False) -> list[tuple[Path, Path]]:
    """(source, output) pairs for a file or folder input. A folder's sub-folders are mirrored with
    ``recursive`` so equal names in different folders do not collide."""
    if in_path.is_dir():
        sources = list_images(in_path, recursive)
        if not sources:
            raise ImageError(in_path, "no images found in this folder")
        pairs = []
        for folder in sorted({s.parent for s in sources}):
            pairs += plan_outputs([s for s in sources if s.parent == folder],
                                  out_path / folder.relative_to(in_path), fmt)
        return sorted(pairs)
    if not in_path.exists():
        raise ImageError(in_path, "file not found")
    if out_path.suffix and is_image_file(out_path):
        return [(in_path, out_path)]
    return plan_outputs([in_path], out_path, fmt)
