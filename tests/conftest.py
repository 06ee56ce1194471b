"""Shared test fixtures: the project config and the benchmark images in ../shared/."""
import os
import subprocess
import sys

# On a shared, loaded machine spinning OpenMP workers make torch many times slower; must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from datapipe.image_io import read_image  # noqa: E402
from utils.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="module")
def ir_dir(tmp_path_factory):
    """OpenVINO IRs of this test module go to a fresh folder, so its first load of a model converts."""
    from utils.runtimes import ir_cache

    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("openvino")
        patch.setattr(ir_cache, "CACHE_DIR", folder)
        yield folder


def run_settings(cfg, backend: str, overrides: dict | None = None):
    """The RunSettings a user run of ``backend`` would get from ``cfg`` plus dotted-key ``overrides``."""
    from utils.config import with_overrides
    from utils.settings import RunSettings

    return RunSettings.from_config(with_overrides(cfg, overrides or {}), backend)


# write_atomic in a child process, stopped after its temp file is written and before the rename.
INTERRUPTED_WRITER = """
import os, socket, sys
from datapipe.image_io import write_atomic
target, host, hold = sys.argv[1:]
if host:
    socket.gethostname = lambda: host
def stop(src, dst):
    print(src, flush=True)
    if hold:
        sys.stdin.read()
    os._exit(0)
os.replace = stop
write_atomic(target, b"half an image")
"""


def interrupted_write(target: Path, host: str = "", hold: bool = False) -> tuple[subprocess.Popen, Path]:
    """(writer process, its temp file) of a real :func:`write_atomic` of ``target`` that never finishes.

    The writer dies at once, or with ``hold`` stays alive until its stdin is closed; ``host`` makes it
    believe it runs on another machine. The temp file's name is the writer's own, never a copy of it.
    """
    proc = subprocess.Popen([sys.executable, "-c", INTERRUPTED_WRITER, str(target), host, "hold" if hold else ""],
                            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    part = Path(proc.stdout.readline().strip())
    if not hold:
        proc.wait(timeout=60)
    assert part.is_file(), f"the interrupted writer left no temp file (exit {proc.poll()})"
    return proc, part
