"""Shared test fixtures: the project config and the benchmark images in ../shared/."""
import os

# On a shared, loaded machine spinning OpenMP workers make torch many times slower; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datapipe.image_io import read_image  # noqa: E402
from utils.config import load_config  # noqa: E402

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


def run_settings(cfg, backend: str, overrides: dict | None = None):
    """The RunSettings a user run of ``backend`` would get from ``cfg`` plus dotted-key ``overrides``."""
    from utils.config import with_overrides
    from utils.settings import RunSettings

    return RunSettings.from_config(with_overrides(cfg, overrides or {}), backend)
