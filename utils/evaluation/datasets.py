"""Benchmark data: where the datasets live, how LR inputs are made from HR images, and HR/SR pairing."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from datapipe.image_io import list_images
from utils.config import PROJECT_ROOT, SCALE

DATASETS_ROOT = PROJECT_ROOT.parent / "shared" / "datasets"
DEFAULT_DATASETS = ("Set5", "Set14", "BSD68")
LR_RESIZE = "PIL Image.resize(BICUBIC), antialiased, after cropping HR to a multiple of 4"


def load_rgb(path: Path) -> np.ndarray:
    """H×W×3 uint8 (grayscale and palette files are expanded to RGB)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def make_lr(hr: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """Bicubic ×1/scale of an HR image already cropped to a multiple of ``scale``."""
    h, w = hr.shape[:2]
    return np.asarray(Image.fromarray(hr).resize((w // scale, h // scale), Image.BICUBIC))


def resolve_dataset(name: str) -> Path:
    """A folder path, or a dataset name under ../shared/datasets."""
    path = Path(name)
    if not path.is_dir():
        path = DATASETS_ROOT / name
    if not path.is_dir():
        raise SystemExit(f"dataset folder not found: {name} (nor {path})")
    return path


def match_pairs(hr_dir: Path, sr_dir: Path) -> list[tuple[Path, Path]]:
    """(HR, SR) files with the same name; the extension may differ (a.png vs a.jpg)."""
    sr_by_stem = {p.stem: p for p in list_images(sr_dir)}
    pairs = [(hr, sr_by_stem[hr.stem]) for hr in list_images(hr_dir) if hr.stem in sr_by_stem]
    if not pairs:
        raise SystemExit(f"no file names in common between {hr_dir} and {sr_dir}")
    return pairs


def align_hr(hr: np.ndarray, sr: np.ndarray, scale: int) -> np.ndarray:
    """HR cropped to the SR size when the tool worked on an HR cropped to a multiple of ``scale``."""
    if hr.shape == sr.shape:
        return hr
    dh, dw = hr.shape[0] - sr.shape[0], hr.shape[1] - sr.shape[1]
    if 0 <= dh < scale and 0 <= dw < scale and hr.shape[2] == sr.shape[2]:
        return hr[: sr.shape[0], : sr.shape[1]]
    raise ValueError(f"SR size {sr.shape[1]}×{sr.shape[0]} does not match HR {hr.shape[1]}×{hr.shape[0]}")
