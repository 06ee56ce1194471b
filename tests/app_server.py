"""Start app.py on a free localhost port in a subprocess for the API and browser tests."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Loading torch, gradio and the model on a busy 2-core machine can take a while; never wait forever.
START_TIMEOUT_SECONDS = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def running_app(workdir: Path, *extra_args: str) -> Iterator[str]:
    """Run the studio with its batch and output roots under ``workdir``; yields its URL."""
    with running_app_process(workdir, *extra_args) as (url, _):
        yield url


@contextmanager
def running_app_process(workdir: Path, *extra_args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """Like :func:`running_app`, yielding (URL, server process) for tests that watch the process.

    The server's output goes to ``workdir/server.log``, quoted in the failure if it does not come up.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    log_path = workdir / "server.log"
    # The studio times each model once and keeps that in the user's cache: here, in the test's folder.
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
           "XDG_CACHE_HOME": str(workdir / "cache")}
    args = [sys.executable, str(PROJECT_ROOT / "app.py"), "--server-port", str(port),
            "--batch-root", str(workdir / "inputs"), "--output-root", str(workdir / "outputs"), *extra_args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not _answers(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                why = f"exited with {proc.returncode}" if proc.poll() is not None else \
                    f"did not answer within {START_TIMEOUT_SECONDS} s"
                raise RuntimeError(f"app.py {why}; log:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.5)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
