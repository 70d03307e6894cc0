"""The Ray executor: each cell one Ray task, on a local Ray cluster or one joined by address.

A task declares its resources (``cpus_per_task``, default ``threads`` or 1, and
``gpus_per_task``, a fraction packs several cells on one GPU), rebuilds its cell (or group of
batched cells) from JSON, runs it with as many torch threads as CPUs it holds (or ``threads``,
when given), and streams each
cell's record and artifacts as the cell finishes (a Ray generator task): workers need no shared
disk, the runner writes the store, and a group that fails later keeps its finished cells. The
driver joins the cluster before the runner plans its tasks, refusing a task no node can hold,
and keeps at most as many tasks in flight as the cluster can run at once; a cell's clock starts
when a worker takes its task (its first streamed item), not while it waits for room on a busy
cluster. A task past the suite's timeout is cancelled (its worker killed) and its unfinished
cells become ``timeout`` outcomes; a task whose worker dies (killed, out of memory, its node
lost) is submitted again by the driver up to ``max_retries`` times, each attempt on its own
clock from when a worker takes it (Ray's own retries re-yield no first item, so a retry's
worker start had counted against the timeout and a crash could end as a timeout), a cell a
retry yields again kept once; then the task's unfinished cells become ``error`` outcomes
naming the cause (as do cells a stream ended without), timed by their attempts' work.
Ray is imported only when the executor is made: ``import bench.executors`` works without it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bench.cells import CellKind, RunOptions, cell_from_json
from bench.cells.base import fix_float_mode
from bench.cells.trials import iter_task, members
from bench.cores import usable_cores
from bench.executors.base import (
    ExecutorOptions,
    address_problem,
    host_port,
    register_executor,
    release_device_cache,
    task_failure,
    task_timeout,
    timeout_error,
    warm_up_worker,
)
from bench.paths import driver_env
from bench.records import Outcome, Record
from bench.registry import LeakbenchError, warn
from bench.stages import NEVER_BEGAN, STAGE, in_stage
from bench.stops import Terminated

EXTRA = 'pip install "ray>=2.9" (the extra leakbench[ray]; from a clone: pip install -e ".[ray]")'
MAX_RETRIES = 2
CAPACITY_REFRESH_S = 5.0  # how often the cluster's size is read again (autoscaling clusters)
STARTED = -1  # the member index of a task's first item: it has a worker
QUEUE_WAIT_S = 600.0  # beyond its own limit, how long a task may wait for a worker
SYSTEM_FAILURES = ("WorkerCrashedError", "OutOfMemoryError", "NodeDiedError", "ObjectLostError",
                   "OwnerDiedError", "LocalRayletDiedError")


def _run_cell(cell_json: dict[str, Any], options: RunOptions, device: str, threads: int
              ) -> Iterator[tuple[int, dict[str, Any], dict[str, bytes]]]:
    """The Ray task: one cell or a batched group, in a worker with ``threads`` torch threads;
    ``(member index, record, artifacts)`` as each cell finishes, and ``(STAGE, stage, {})``
    as its cells enter a stage."""
    fix_float_mode()  # before torch's thread pool exists: its threads inherit the mode
    torch.set_num_threads(threads)
    dev = torch.device(device)
    warm_up_worker(dev)  # a fresh worker's imports, before the clock (once per process)
    yield STARTED, {}, {}  # the cell's clock starts now, not when it waited for room
    task = cell_from_json(cell_json)
    for i, outcome in iter_task(task, dev, options, marks=True):
        yield (i, outcome, {}) if i == STAGE else (i, outcome.record.to_json(),
                                                   outcome.artifacts)
    release_device_cache(dev)  # Ray reuses the worker: a packed neighbour needs the memory


@dataclass
class _Running:
    task: CellKind
    started: float  # submitted, then (when ``begun``) the moment a worker took it
    finished: set[int] = field(default_factory=set)  # members whose outcomes arrived
    begun: bool = False
    stage: str | None = None  # the stage its worker last said the task entered (this attempt)
    attempt: int = 0  # retries so far (the driver's, after a worker died)
    spent: float = 0.0  # seconds the earlier attempts ran after a worker took them

    def elapsed(self, now: float) -> float:
        """Seconds of work over the attempts: a retry's wait and worker start not counted."""
        return self.spent + (now - self.started if self.begun else 0.0)


def import_ray() -> Any:
    """Ray, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise LeakbenchError(f"--executor ray: Ray is not installed; {EXTRA}") from None
    return ray


def local_runtime_env() -> dict[str, Any]:
    """What workers of a cluster started here need to import leakbench and its plugins, and
    the driver's locations (:func:`driver_env`)."""
    root = str(Path(__file__).resolve().parents[2])
    paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(dict.fromkeys(paths)), **driver_env()}}


def reachable(address: str, seconds: float = 5.0) -> None:
    """A ``HOST:PORT`` address that nothing answers on, or where what answers does not speak
    gRPC (a web server), is one line within ``seconds``: ``ray.init`` waits on it for minutes
    (with ``RAY_USE_TLS`` set only the port is tried). ``auto`` and ``ray://`` addresses
    are Ray's to check."""
    import socket

    parts = host_port(address)
    if parts is None or "://" in address or address_problem(address):
        return
    try:
        with socket.create_connection((parts[0] or "127.0.0.1", int(parts[1])),
                                      seconds) as conn:
            speaks = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or \
                speaks_http2(conn, seconds)
    except OSError as e:
        raise LeakbenchError(f"--ray-address {address}: nothing answers there "
                             f"({e.strerror or type(e).__name__}); is the Ray head running?"
                             ) from None
    if not speaks:  # ray.init waited on it for minutes
        raise LeakbenchError(f"--ray-address {address}: what answers there is no Ray head "
                             "(it does not speak gRPC, as Ray's GCS does; its default port "
                             "is 6379)")


def speaks_http2(conn: Any, seconds: float) -> bool:
    """Whether the server on ``conn`` answers HTTP/2's connection preface with a SETTINGS
    frame, as every gRPC server (Ray's GCS) does; an HTTP/1 server, a database or a silent
    port does not."""
    conn.settimeout(seconds)
    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    head = b""
    try:
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:  # a timeout: nothing answered
        return False
    return head[3] == 4  # the frame type: SETTINGS


@contextlib.contextmanager
def keep_sigterm() -> Iterator[None]:
    """This process's SIGTERM handler, as it was before the block: ``ray.init`` installs one
    that exits with status 15 (and ``shutdown`` restores the default, which kills at once),
    so the CLI's stop on SIGTERM (workers stopped, lock released, exit 143) was lost. A
    SIGTERM that Ray's handler took inside the block (``ray.init`` installs it at its start
    and returns seconds later) is raised as the CLI's :class:`Terminated`."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    except SystemExit as e:
        if e.code != signal.SIGTERM:
            raise
        raise Terminated() from None
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)


def system_failure(error: Exception) -> bool:
    """Whether a task failed because its worker or node did (worth another attempt), not
    because the cell raised."""
    return any(c.__name__ in SYSTEM_FAILURES  # subclasses too (ObjectReconstructionFailed…)
               for e in (error, getattr(error, "cause", None)) for c in type(e).__mro__)


def failure_cause(error: Exception, max_retries: int) -> str:
    """The ``error`` text of a task that Ray could not finish."""
    name = type(error).__name__
    cause = getattr(error, "cause", None)
    if system_failure(error):
        first = (str(error).strip().splitlines() or [""])[0]
        return (f"Ray worker died running the cell ({name}: {first}); "
                f"gave up after {max_retries} retries")
    if isinstance(cause, Exception):
        return f"the Ray task raised {type(cause).__name__}: {cause}"
    return f"Ray could not run the cell: {name}: {error}"


@register_executor("ray")
class RayExecutor:
    """Cells as Ray tasks; ``jobs`` does not apply (the cluster's resources decide)."""

    def __init__(self, device: torch.device, timeout: float, jobs: int = 1,
                 options: ExecutorOptions | None = None, threads: int | None = None) -> None:
        self.ray = import_ray()
        options = options or ExecutorOptions()
        options.check(device.type)
        self.timeout, self.address = timeout, options.address
        cpus = options.cpus_per_task  # --threads alone is the task's CPUs, as its help says
        self.cpus = cpus if cpus is not None else float(threads) if threads is not None else 1.0
        self.cpus_from_threads = cpus is None and threads is not None  # what to lower
        gpus = options.gpus_per_task
        if gpus is None:
            gpus = 1.0 if device.type == "cuda" else 0.0
        self.gpus = gpus
        self.max_retries = options.max_retries if options.max_retries is not None \
            else MAX_RETRIES
        self.device = "cuda" if gpus > 0 else "cpu"  # a GPU share: the one Ray assigned
        self.threads = threads if threads is not None else max(1, int(self.cpus))
        if self.threads > max(1.0, self.cpus):  # Ray counts CPUs; torch spins more threads
            # (a fraction of a CPU with one thread is the packing the user asked for)
            warn(f"Ray tasks of {self.cpus:g} CPU(s) each run {self.threads} torch "
                 f"thread(s): more threads than CPUs, so tasks slow each other down "
                 f"(--cpus-per-task {self.threads:g} gives each the cores its threads use)")
        self._inflight: dict[Any, _Running] = {}  # by the task's ObjectRefGenerator
        self._capacity, self._capacity_at = 1, -CAPACITY_REFRESH_S
        self._started_cluster = False
        self._tasks = 0  # the tasks of the current run

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():  # a cluster this process already joined (tests, notebooks)
            return
        quiet = {"include_dashboard": False, "logging_level": logging.ERROR,
                 "log_to_driver": False}
        self._started_cluster = True  # before init: a SIGTERM during it still shuts it down
        with keep_sigterm():
            if self.address is None:
                # the cores this process may use (affinity, cgroup), as the process pool counts
                ray.init(address="local", num_cpus=usable_cores(),
                         runtime_env=local_runtime_env(), **quiet)
            else:
                reachable(self.address)
                env = driver_env()
                try:
                    ray.init(address=self.address,
                             runtime_env={"env_vars": env} if env else None, **quiet)
                except (ConnectionError, ValueError, RuntimeError) as e:
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
                    raise LeakbenchError(f"--ray-address {self.address}: cannot join the Ray "
                                         f"cluster: {first}") from None

    @property
    def workers(self) -> int:
        """Tasks run at once, as the records' provenance names them: the cluster's room
        (last read), or the run's tasks where they are fewer. 1 until :meth:`connect`."""
        return min(self._capacity, self._tasks) if self._tasks else self._capacity

    def connect(self) -> None:
        """Join (or start) the cluster and read its room, before the runner plans its tasks;
        :meth:`close` (or the end of :meth:`run`) shuts down a cluster it started. A task no
        node of the cluster can hold is refused here (it would wait until its timeout)."""
        self._connect()
        nodes = [n.get("Resources") or {} for n in self.ray.nodes() if n.get("Alive", True)]
        if not any(r.get("CPU", 0.0) + 1e-9 >= self.cpus and r.get("GPU", 0.0) + 1e-9
                   >= self.gpus for r in nodes):
            most = {k: max((r.get(k, 0.0) for r in nodes), default=0.0) for k in ("CPU", "GPU")}
            need = (f"no node of the cluster has {self.cpus:g} CPU(s) and {self.gpus:g} GPU(s) "
                    f"for a task (the largest: {most['CPU']:g} CPU(s), {most['GPU']:g} GPU(s))")
            if self.address is None:  # the cluster this run started: nothing will add a node
                lower = ("--threads (a task's CPUs where --cpus-per-task is not given)"
                         if self.cpus_from_threads else "--cpus-per-task")
                raise LeakbenchError(f"--executor ray: {need}; lower {lower} or "
                                     "--gpus-per-task")
            warn(f"--executor ray: {need} yet; the tasks wait for an autoscaler to add one "
                 f"(up to {QUEUE_WAIT_S:g}s beyond a cell's timeout)")
        self.capacity()

    def capacity(self) -> int:
        """How many tasks the cluster can run at once (read again every few seconds)."""
        now = time.perf_counter()
        if now - self._capacity_at >= CAPACITY_REFRESH_S:
            total = self.ray.cluster_resources()
            fits = [total.get("CPU", 0.0) / self.cpus]
            if self.gpus > 0:
                fits.append(total.get("GPU", 0.0) / self.gpus)
            self._capacity, self._capacity_at = max(1, int(min(fits) + 1e-9)), now
        return self._capacity

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        if not cells:
            return
        self._connect()
        self._tasks = len(cells)
        ray = self.ray
        self._remote = ray.remote(_run_cell).options(  # retried by the driver (_collect)
            num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0, retry_exceptions=False,
            name="leakbench-cell")
        pending = list(reversed(cells))
        try:
            while pending or self._inflight:
                while pending and len(self._inflight) < self.capacity():
                    self._submit(_Running(pending.pop(), time.perf_counter()), options)
                streams = list(self._inflight)
                ready, rest = ray.wait(streams, num_returns=1, timeout=0.5)
                if ready and rest:
                    ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
                for stream in ready:
                    yield from self._collect(stream, options)
                yield from self._expire(options)
        finally:
            self.cancel()
            self.close()

    def close(self) -> None:
        """Shut down the cluster this executor started (one it joined stays up); the runner
        calls it when its run ends, however it ends, and calling it again does nothing."""
        if self._started_cluster:
            with keep_sigterm():
                self.ray.shutdown()
            self._started_cluster = False

    def _submit(self, running: _Running, options: RunOptions) -> None:
        stream = self._remote.remote(running.task.to_json(), options, self.device, self.threads)
        self._inflight[stream] = running

    def _collect(self, stream: Any, options: RunOptions) -> list[tuple[CellKind, Outcome]]:
        """The outcomes a task has streamed so far (call it when the stream is ready); its
        unfinished cells fail if the task failed, or ended without yielding them."""
        running = self._inflight[stream]
        cells = members(running.task)
        out: list[tuple[CellKind, Outcome]] = []
        while True:
            try:
                i, record, artifacts = self.ray.get(next(stream))
            except (StopIteration, self.ray.exceptions.RayError) as e:
                del self._inflight[stream]
                now = time.perf_counter()
                over = running.begun and now - running.started > task_timeout(
                    running.task, self.timeout)  # past its limit: a timeout, not a retry
                if len(running.finished) < len(cells) and not isinstance(e, StopIteration) \
                        and system_failure(e) and running.attempt < self.max_retries \
                        and not over:
                    self._submit(replace(running, started=now, begun=False, stage=None,
                                         attempt=running.attempt + 1,
                                         spent=running.elapsed(now)), options)
                elif len(running.finished) < len(cells):
                    error = (timeout_error(running.task, self.timeout) if over else
                             "the Ray task ended without this cell's outcome"
                             if isinstance(e, StopIteration) else
                             failure_cause(e, self.max_retries))
                    error = in_stage(running.stage, error)  # stopped before an attack ran?
                    out += task_failure(running.task, "timeout" if over else "error", error,
                                        options,
                                        running.elapsed(now), torch.device(self.device),
                                        frozenset(running.finished))
                return out
            if i == STARTED:  # a worker took the task (this attempt): its clock starts
                running.started, running.begun = time.perf_counter(), True
            elif i == STAGE:
                running.stage = record
            elif i not in running.finished:  # a retried task may yield a cell again: once
                running.finished.add(i)
                out.append((cells[i], Outcome(Record.from_json(record), artifacts)))
            if len(running.finished) == len(cells):
                del self._inflight[stream]  # all in: no need to wait for the stream's end
                return out
            if not (stream.next_ready() or stream.is_finished()):
                return out

    def _expire(self, options: RunOptions) -> Iterator[tuple[CellKind, Outcome]]:
        """Tasks past the timeout: what they streamed before it kept, then cancelled, a
        ``timeout`` outcome for each cell they did not finish."""
        now = time.perf_counter()
        late = [(stream, run, now - run.started) for stream, run in self._inflight.items()
                if now - run.started > task_timeout(run.task, self.timeout)
                + (0.0 if run.begun else QUEUE_WAIT_S)]
        for stream, run, elapsed in late:
            if stream.next_ready():
                yield from self._collect(stream, options)
            if stream not in self._inflight:  # its last cells had arrived after all
                continue
            del self._inflight[stream]
            self.ray.cancel(stream, force=True)
            error = in_stage(run.stage, timeout_error(run.task, self.timeout)) \
                if run.begun else (
                f"{NEVER_BEGAN}no worker took the task within {elapsed:.0f}s of its submission "
                "(the cluster stayed busy, or no node can hold it any more)")
            yield from task_failure(run.task, "timeout", error, options,
                                    run.elapsed(now), torch.device(self.device),
                                    frozenset(run.finished))

    def cancel(self) -> None:
        for ref in list(self._inflight):
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort while shutting down
                pass
        self._inflight.clear()
