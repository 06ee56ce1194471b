"""The batch on Ray (Ray Data): the same per-file unit as the local engine, run by a pool of actors.

The driver lists the files; a Ray dataset of their paths (one file per block, so a dead worker costs
one file and the pool balances itself) goes through ``map_batches`` with :class:`FileWorker`, an actor
that loads the backend once and calls :func:`~utils.batch.runner.process_one` on each file it gets
(limits, resume records, atomic writes, metadata, per-file errors). The driver collects one status row
per file and reports it like the local engine. Images are read inside the actor, never with
``ray.data.read_images``, which drops alpha, EXIF and ICC.

Without an address Ray runs embedded in this process's machine (no dashboard); with ``address`` or
``RAY_ADDRESS`` it joins a cluster, whose token (``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH``, read by
Ray itself from this environment) is used as is. On a joined cluster every node must see the inputs
and outputs at the same paths; :meth:`RayEngine.run` checks that before any work.

Ray is an optional extra (``requirements-ray.txt``), imported only when an engine is made.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import traceback
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from omegaconf import DictConfig, OmegaConf

from datapipe.image_io import remove_stale_parts
from utils.backends import BackendUnavailable, load_backend
from utils.batch.runner import EXPECTED_ERRORS, BatchItem, log_errors, process_one
from utils.devices import set_threads
from utils.pipeline.chain import Cancelled
from utils.settings import RunSettings

INSTALL_HINT = "install it with `make setup-ray` (or `.venv/bin/python -m pip install -r requirements-ray.txt`)"
# CPUs per node left unreserved, so Ray Data's own tasks are never starved (the issue measured 2 actors
# × 1 CPU stalling a 2-CPU node when reading ran in tasks); fractional shares also let any --workers fit.
RAY_DATA_CPUS = 0.5
# Attempts after a worker dies on a file; a file that kills its worker every time is reported, not retried forever.
TASK_RETRIES = 2
# Connecting to a cluster address: how long to wait for its port before giving up.
CONNECT_TIMEOUT_S = 5.0
# How often a busy worker asks whether the job was cancelled (seconds).
STOP_POLL_S = 0.25
WORKER_DIED = "the Ray worker processing it died"
ROW_FIELDS = ("index", "status", "reason", "seconds", "traceback", "has_output")


class RayEngineError(RuntimeError):
    """Ray cannot run this batch (not installed, no cluster at the address, storage not shared)."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the [data] extra: pandas, pyarrow)
    except ImportError as exc:
        raise RayEngineError(f"the Ray engine needs Ray ({exc}); {INSTALL_HINT}") from None
    return ray


class JobControl:
    """One job's shared state (a Ray actor, see RayEngine.run): the stop flag, set by the driver when the
    job is cancelled and polled by the workers, and the workers themselves, which register on start so
    the driver can end every one of them with the job. Ray Data drops its own handle of a worker that
    died on a file's last attempt only much later (2.60), and that worker, restarted meanwhile, would
    hold its CPUs and stall the next job."""

    def __init__(self) -> None:
        self.stopped = False
        self.workers: dict[str, Any] = {}

    def set(self) -> None:
        self.stopped = True

    def is_set(self) -> bool:
        return self.stopped

    def register(self, worker_id: str, worker: Any) -> None:
        self.workers[worker_id] = worker

    def registered(self) -> list:
        return list(self.workers.values())


class FileWorker:
    """One actor of the pool: loads the backend once, then processes each file it is given."""

    def __init__(self, backend_name: str, cfg: dict, settings: RunSettings, overwrite: bool,
                 inputs: frozenset[Path], control: Any) -> None:
        import ray

        self.settings, self.overwrite, self.inputs, self.control = settings, overwrite, inputs, control
        context = ray.get_runtime_context()
        ray.get(control.register.remote(context.get_actor_id(), context.current_actor))
        self.stopped, self.checked = False, 0.0
        cfg = OmegaConf.create(cfg)
        OmegaConf.set_readonly(cfg, True)
        # Threads follow the CPUs Ray reserved for this actor, so actors sharing a node do not oversubscribe it.
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        set_threads(cfg.get("threads") or max(1, round(assigned)))
        self.backend, self.setup_error, self.setup_traceback = None, "", ""
        try:
            self.backend = load_backend(backend_name, cfg)
        except Exception as exc:  # reported on every file of this actor rather than crash-looping it
            node = ray.util.get_node_ip_address()
            self.setup_error = f"{backend_name} cannot be loaded on Ray node {node}: {exc}"
            if not isinstance(exc, (BackendUnavailable, *EXPECTED_ERRORS)):
                self.setup_traceback = traceback.format_exc()

    def __call__(self, batch: dict) -> dict:
        rows = [self.process(int(i), Path(s), Path(d))
                for i, s, d in zip(batch["index"], batch["source"], batch["output"])]
        return {key: [row[key] for row in rows] for key in ROW_FIELDS}

    def process(self, index: int, src: Path, dst: Path) -> dict:
        if self.is_stopped():
            item = BatchItem(src, None, "cancelled", "not processed")
        elif self.backend is None:
            item = BatchItem(src, None, "error", f"{src.name}: {self.setup_error}", traceback=self.setup_traceback)
        else:
            try:
                item = process_one(src, dst, self.backend, self.settings, self.overwrite, self.check_stop,
                                   self.inputs)
            except Cancelled:
                item = BatchItem(src, None, "cancelled", "not processed")
        return {"index": index, "status": item.status, "reason": item.reason, "seconds": item.seconds,
                "traceback": item.traceback, "has_output": item.output is not None}

    def check_stop(self, done: int, total: int) -> None:
        """Patch progress: stops the current file, writing nothing, once the job is cancelled."""
        if self.is_stopped():
            raise Cancelled()

    def is_stopped(self) -> bool:
        import ray

        now = time.monotonic()
        if not self.stopped and now - self.checked >= STOP_POLL_S:
            self.checked = now
            self.stopped = ray.get(self.control.is_set.remote())
        return self.stopped


class RayEngine:
    """A connection to Ray that runs batches; a long-lived process (the app) keeps one.

    ``address``: ``host:6379``, ``ray://host:10001`` or ``auto``; default ``RAY_ADDRESS``, else an
    embedded local Ray that :meth:`close` shuts down again, using ``num_cpus`` (default: every core).
    """

    def __init__(self, address: Optional[str] = None, num_cpus: Optional[int] = None) -> None:
        self.ray = ray = import_ray()
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.started = False
        if not ray.is_initialized():
            try:
                if address:
                    check_reachable(address)
                    ray.init(address=address, logging_level="WARNING")
                else:
                    ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")
                    self.started = True
            except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
                raise RayEngineError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
        # Only an embedded Ray is known to share this machine's files with every worker.
        self.shared_files = self.started

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    def __enter__(self) -> "RayEngine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def nodes(self) -> list[dict]:
        return [n for n in self.ray.nodes() if n.get("Alive")]

    def run(self, pairs: list[tuple[Path, Path]], backend_name: str, cfg: DictConfig, settings: RunSettings,
            workers: Optional[int] = None, overwrite: bool = False,
            on_item: Optional[Callable[[BatchItem], None]] = None, errors_log: Optional[Path] = None,
            stop: Optional[threading.Event] = None) -> list[BatchItem]:
        """Like :func:`~utils.batch.runner.process_batch`, on ``workers`` actors (default: one per GPU,
        else one per node). ``on_item`` gets each finished file as it arrives (in completion order);
        setting ``stop`` stops scheduling new files and the running ones after their current patch
        (they come back ``cancelled``, nothing written). Returns the items in ``pairs`` order."""
        ray = self.ray
        if not pairs:
            return []
        if not self.shared_files:
            self.check_shared_storage(pairs)
        folders = {dst.parent for _, dst in pairs}
        remove_parts(folders)
        nodes = self.nodes()
        workers = min(workers or default_workers(nodes), len(pairs))
        resources = actor_resources(workers, nodes)
        control = ray.remote(num_cpus=0)(JobControl).remote()
        # Absolute paths: actors do not share the driver's working directory.
        rows = [{"index": i, "source": str(src.absolute()), "output": str(dst.absolute())}
                for i, (src, dst) in enumerate(pairs)]
        with warnings.catch_warnings():
            # Ray 2.60 deprecates extra remote args, but max_task_retries has no named parameter yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                FileWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_kwargs={
                    "backend_name": backend_name, "cfg": OmegaConf.to_container(cfg, resolve=True),
                    "settings": settings, "overwrite": overwrite,
                    "inputs": frozenset(src.resolve() for src, _ in pairs), "control": control},
                max_task_retries=TASK_RETRIES, **resources)
        ds.context.enable_progress_bars = False  # the caller shows progress through on_item
        ds.context.print_on_execution_start = False
        # A file whose worker died on every attempt drops out of the results; it is reported below.
        ds.context.max_errored_blocks = -1

        items: dict[int, BatchItem] = {}

        def finished(index: int, item: BatchItem) -> None:
            items[index] = item
            if errors_log is not None:
                log_errors([item], errors_log)
            if on_item is not None:
                on_item(item)

        try:
            with forward_stop(stop, control):
                for row in ds.iter_rows():
                    index = int(row["index"])
                    src, dst = pairs[index]  # the caller's paths, not the absolute ones the actor got
                    finished(index, BatchItem(src, dst if row["has_output"] else None, row["status"], row["reason"],
                                              float(row["seconds"]), row["traceback"]))
            for index, (src, _) in enumerate(pairs):
                if index not in items:
                    finished(index, BatchItem(src, None, "error", f"{src.name}: {WORKER_DIED} on each of "
                                                                  f"{TASK_RETRIES + 1} attempts (a crash or out of "
                                                                  "memory); see the Ray logs"))
        finally:
            for worker in ray.get(control.registered.remote()):
                ray.kill(worker)
            ray.kill(control)
            remove_parts(folders)  # left by workers killed mid-write
        return [items[i] for i in range(len(pairs))]

    def unseen_paths(self, paths: list[Path]) -> dict[str, list[str]]:
        """For every alive node that cannot see some of ``paths``: its address → those paths."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        @self.ray.remote(num_cpus=0)
        def missing(names: list[str]) -> list[str]:
            return [name for name in names if not os.path.exists(name)]

        names = [str(p.absolute()) for p in paths]
        nodes = self.nodes()
        answers = self.ray.get([missing.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"],
                                                                                                   soft=False))
                                .remote(names) for n in nodes])
        return {n["NodeManagerAddress"]: found for n, found in zip(nodes, answers) if found}

    def check_shared_storage(self, pairs: list[tuple[Path, Path]]) -> None:
        """Refuse (RayEngineError) when some node cannot see the first input or the output folder: each
        worker reads and writes the files itself."""
        out_root = Path(os.path.commonpath([dst.parent.absolute() for _, dst in pairs]))
        out_root.mkdir(parents=True, exist_ok=True)
        marker = out_root / f".sr-ray-check-{uuid.uuid4().hex}"
        marker.touch()
        try:
            unseen = self.unseen_paths([marker, pairs[0][0]])
        finally:
            marker.unlink(missing_ok=True)
        if unseen:
            shown = {str(marker.absolute()): f"the output folder {out_root}"}
            where = "; ".join(f"node {node} cannot see {', '.join(shown.get(p, p) for p in found)}"
                              for node, found in unseen.items())
            raise RayEngineError("on a Ray cluster the inputs and outputs must be on storage every node mounts at "
                                 f"the same path (NFS, a shared volume): {where}")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast (ConnectionError) when nothing listens at ``host:port``; ray.init would retry for minutes."""
    host_port = address.removeprefix("ray://")
    if host_port == "auto" or ":" not in host_port:
        return  # Ray finds the local cluster itself
    host, port = host_port.rsplit(":", 1)
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers there ({exc})") from None


def default_workers(nodes: list[dict]) -> int:
    gpus = int(sum(n["Resources"].get("GPU", 0) for n in nodes))
    return gpus or len(nodes) or 1


def actor_resources(workers: int, nodes: list[dict]) -> dict[str, float]:
    """``num_cpus``/``num_gpus`` per actor: the cluster's CPUs shared evenly (never more than one node
    has), less :data:`RAY_DATA_CPUS` per node; one GPU each when there are enough, else a share."""
    cpus = [n["Resources"].get("CPU", 0.0) - RAY_DATA_CPUS for n in nodes]
    cpus = [c for c in cpus if c > 0]
    if not cpus:
        raise RayEngineError("the Ray cluster has no CPU to run workers on")
    per_actor = {"num_cpus": round(min(max(cpus), sum(cpus) / workers), 2)}
    gpus = sum(n["Resources"].get("GPU", 0.0) for n in nodes)
    if gpus:
        per_actor["num_gpus"] = min(1.0, round(gpus / workers, 2))
    return per_actor


def remove_parts(folders) -> None:
    for folder in folders:
        if folder.is_dir():
            remove_stale_parts(folder)


@contextmanager
def forward_stop(stop: Optional[threading.Event], control: Any) -> Iterator[None]:
    """Relay the caller's ``stop`` event (set from any thread) to the workers' flag while the job runs."""
    if stop is None:
        yield
        return
    done = threading.Event()

    def relay() -> None:
        while not done.wait(0.1):
            if stop.is_set():
                control.set.remote()
                return

    thread = threading.Thread(target=relay, name="ray-batch-stop", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
