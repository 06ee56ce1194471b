"""Shared test fixtures: the project config and the benchmark images in ../shared/."""
from pathlib import Path

import numpy as np
import pytest

from datapipe.image_io import read_image
from utils.config import load_config

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
DATASETS = SHARED / "datasets"


@pytest.fixture(scope="session")
def cfg():
    return load_config()


@pytest.fixture(scope="session")
def butterfly() -> np.ndarray:
    """Set5 butterfly as H×W×3 float32 in [0, 1]."""
    path = DATASETS / "Set5" / "butterfly.png"
    if not path.is_file():
        pytest.fail(f"benchmark image missing: {path} (../shared must sit beside the project)")
    return read_image(path).rgb
