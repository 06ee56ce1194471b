"""Training pairs made on the fly: random HR crops (with horizontal flips) and their degraded ×4 inputs.

Sample ``i`` is a pure function of (seed, i): its image, crop, flip and degradation all come from
``np.random.default_rng((seed, i))``. So any number of loader workers or GPUs gives the same
samples, and resuming at optimizer step s just starts the index stream where step s left it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from datapipe.image_io import list_images, read_image
from utils.training.degradation import DegradationParams, degrade


def collect_images(folders: Sequence[str | Path]) -> list[Path]:
    """Every image under ``folders`` (sub-folders included), sorted; ValueError when there is none."""
    files = sorted(p for folder in folders for p in list_images(folder, recursive=True))
    if not files:
        raise ValueError(f"no training images found in {', '.join(map(str, folders)) or '(no folders given)'}")
    return files


def pad_to_at_least(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pad the bottom/right of an H×W×3 image so both sides are at least ``size``."""
    h, w = img.shape[:2]
    if h >= size and w >= size:
        return img
    return cv2.copyMakeBorder(img, 0, max(0, size - h), 0, max(0, size - w), cv2.BORDER_REFLECT_101)


def random_crop(img: np.ndarray, size: int, hflip_prob: float, rng: np.random.Generator) -> np.ndarray:
    """A size×size crop at a uniform position, mirrored left-right with probability ``hflip_prob``."""
    img = pad_to_at_least(img, size)
    top = int(rng.integers(img.shape[0] - size + 1))
    left = int(rng.integers(img.shape[1] - size + 1))
    crop = img[top:top + size, left:left + size]
    return np.ascontiguousarray(crop[:, ::-1] if rng.uniform() < hflip_prob else crop)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    img = pad_to_at_least(img, size)
    top, left = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    return np.ascontiguousarray(img[top:top + size, left:left + size])


@lru_cache(maxsize=4)
def epoch_order(seed: int, epoch: int, count: int) -> np.ndarray:
    """The seeded permutation of ``count`` images that epoch ``epoch`` visits."""
    # The extra constant keeps this stream apart from the per-sample streams seeded with (seed, index).
    return np.random.default_rng((seed, epoch, 0xE90C)).permutation(count)


def to_chw(img: np.ndarray) -> torch.Tensor:
    """H×W×3 float32 -> 3×H×W tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class DegradedPairs(Dataset):
    """Map-style dataset over an unbounded index: ``pairs[i]`` -> (lq 3×c/s×c/s, gt 3×c×c), float32 in [0, 1]
    (c: crop size, s: the degradation scale). Epoch e visits every image once, in a seeded order."""

    def __init__(self, files: Sequence[Path], crop_size: int, hflip_prob: float, params: DegradationParams,
                 seed: int):
        if crop_size % params.scale:
            raise ValueError(f"crop_size {crop_size} is not a multiple of the scale {params.scale}")
        self.files = list(files)
        self.crop_size, self.hflip_prob, self.params, self.seed = crop_size, hflip_prob, params, seed

    def __len__(self) -> int:
        return len(self.files)  # one epoch; indices beyond it are valid and start the next epochs

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, position = divmod(int(index), len(self.files))
        rng = np.random.default_rng((self.seed, int(index)))
        path = self.files[epoch_order(self.seed, epoch, len(self.files))[position]]
        gt = random_crop(read_image(path).rgb, self.crop_size, self.hflip_prob, rng)
        lq = degrade(gt, self.params, rng)
        return to_chw(lq), to_chw(gt)


class ShardedBatches(Sampler[list[int]]):
    """Endless micro-batches of sample indices for one process: micro-batch m of process r of n holds
    indices (m·n + r)·b ... (m·n + r)·b + b − 1, starting at micro-batch ``start``."""

    def __init__(self, micro_batch_size: int, rank: int = 0, world_size: int = 1, start: int = 0):
        self.b, self.rank, self.world, self.start = micro_batch_size, rank, world_size, start

    def __iter__(self) -> Iterator[list[int]]:
        m = self.start
        while True:
            first = (m * self.world + self.rank) * self.b
            yield list(range(first, first + self.b))
            m += 1
