"""Start the studio: config from the command line's choices, folders, the queue, the server."""
from __future__ import annotations

import atexit
import logging
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from utils.backends import BackendUnavailable, resolve_backend_name
from utils.batch.ray_engine import RayEngine, RayEngineError
from utils.config import ConfigError, load_config, validate_config, with_overrides
from utils.devices import set_threads
from utils.studio.service import Studio
from utils.studio.ui import CSS, build_ui
from utils.studio.user_models import DEFAULT_MODELS_DIR


@dataclass(frozen=True)
class StudioOptions:
    server_name: str = "127.0.0.1"
    server_port: int = 7860
    share: bool = False
    open_browser: bool = False
    backend: Optional[str] = None
    cfg_path: Optional[str] = None
    sd_path: Optional[str] = None
    started_ckpt_path: Optional[str] = None
    batch_root: str = "inputs"
    output_root: str = "outputs"
    models_dir: Optional[str] = None  # None: weights/models in the project
    allow_model_upload: Optional[bool] = None  # None: only when not shared (see model_upload_allowed)
    concurrency: int = 1
    max_queue: int = 20
    max_file_size: str = "50mb"
    max_pixels: Optional[int] = None
    threads: Optional[int] = None
    engine: str = "local"
    ray_address: Optional[str] = None


def model_upload_allowed(o: StudioOptions) -> bool:
    """Uploading model files is on by default only for a studio no one else reaches: a model file is
    checked and read as tensors only, but it is still someone else's large file on this machine."""
    if o.allow_model_upload is not None:
        return o.allow_model_upload
    return not (o.share or o.server_name == "0.0.0.0")


def launch(o: StudioOptions) -> int:
    """Serve the studio until interrupted; 2 with one message when the options cannot work."""
    if o.concurrency < 1 or o.max_queue < 1:
        print("error: --concurrency and --max-queue must be at least 1", file=sys.stderr)
        return 2
    chosen = {"backend": o.backend, "sd_pipe.params.pretrained_model_name_or_path": o.sd_path,
              "model_start.ckpt_path": o.started_ckpt_path, "limits.max_input_pixels": o.max_pixels,
              "threads": o.threads}
    try:
        cfg = with_overrides(load_config(o.cfg_path), {k: v for k, v in chosen.items() if v is not None})
        validate_config(cfg)
        default, notice = resolve_backend_name(cfg)
    except (BackendUnavailable, ConfigError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    set_threads(cfg.threads)
    batch_root, output_root = Path(o.batch_root).absolute(), Path(o.output_root).absolute()
    batch_root.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix="sr-studio-"))
    atexit.register(shutil.rmtree, tmp_root, True)
    ray = None
    if o.engine == "ray":
        try:
            ray = RayEngine(o.ray_address)
        except RayEngineError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        atexit.register(ray.close)
    elif o.ray_address:
        print("error: --ray-address applies only to --engine ray", file=sys.stderr)
        return 2
    models_dir = Path(o.models_dir).absolute() if o.models_dir else DEFAULT_MODELS_DIR
    studio = Studio(cfg, default, batch_root, output_root, tmp_root, ray, models_dir=models_dir,
                    allow_model_upload=model_upload_allowed(o))
    print(f"[backend] {notice}; batch root {batch_root}; outputs {output_root}", file=sys.stderr)
    demo = build_ui(studio, o.concurrency)
    url = f"http://{'127.0.0.1' if o.server_name == '0.0.0.0' else o.server_name}:{o.server_port}"
    # Where no browser can be started (a server, a container) opening fails silently: say it plainly.
    print(f"SR Studio: open {url} in your web browser" + (" (opening it now if this machine has one)"
                                                          if o.open_browser else ""), file=sys.stderr)
    # Results are served from the system temp folder, which Gradio allows already: no allowed_paths.
    demo.queue(default_concurrency_limit=o.concurrency, max_size=o.max_queue).launch(
        server_name=o.server_name, server_port=o.server_port, share=o.share,
        max_file_size=o.max_file_size, show_error=True, css=CSS, inbrowser=o.open_browser)
    return 0
