"""Synthetic HR images for smoke-training runs: smooth colour fields with sharp shapes and stripes, so
blur, noise and JPEG visibly change them. Deterministic for a seed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def synthetic_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """size×size×3 uint8 RGB: a bilinear colour gradient, a stripe patch and a few filled shapes."""
    corners = rng.uniform(0, 255, (2, 2, 3)).astype(np.float32)
    img = cv2.resize(corners, (size, size), interpolation=cv2.INTER_LINEAR)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle, period = rng.uniform(0, np.pi), rng.uniform(3, 12)
    stripes = 127.5 + 127.5 * np.sin(2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period)
    top, left = rng.integers(0, size // 2, 2)
    img[top:top + size // 3, left:left + size // 3] = stripes[top:top + size // 3, left:left + size // 3, None]
    for _ in range(4):
        color = tuple(float(c) for c in rng.uniform(0, 255, 3))
        x, y = (int(v) for v in rng.integers(0, size, 2))
        r = int(rng.integers(size // 16 + 1, size // 4 + 2))
        if rng.uniform() < 0.5:
            cv2.circle(img, (x, y), r, color, thickness=-1, lineType=cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x - r, y - r), (x + r, y + r), color, thickness=-1)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def write_synthetic_images(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """Write ``count`` PNGs (img_0000.png, ...) into ``folder``; existing files are kept as they are
    (they were written from the same seed)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.png"
        if not path.is_file():
            rgb = synthetic_image(size, np.random.default_rng((seed, i)))
            cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append(path)
    return paths
