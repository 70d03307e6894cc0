"""The executor protocol: cells in, outcomes out (record plus artifact bytes).

An executor runs cells somewhere (this process, worker processes, later a cluster), enforces
the per-cell timeout and turns a cell it could not finish into a ``timeout`` or ``error``
outcome. It never writes the store: the runner does (benchopt's idea: parallel backends are
configuration, not a second code path).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from bench.cells.base import CellKind, RunOptions, failure_outcome
from bench.records import Outcome
from bench.registry import LeakbenchError, import_components, suggest
from bench.stages import SETUP
from bench.suite.schema import MAX_TASK_RETRIES, resource_problem


class Executor(Protocol):
    """Runs cells and yields ``(cell, outcome)`` as each finishes, in any order.

    Optional, used where present: ``workers`` (tasks run at once: the runner cuts groups of
    seeds to fill them, records name them), ``connect()`` (called before the runner plans its
    tasks, e.g. to join a cluster and learn its size) and ``close()`` (called when the run
    ends, however it ends)."""

    def run(self, cells: Sequence[CellKind], options: RunOptions) -> Iterator[
            tuple[CellKind, Outcome]]: ...

    def cancel(self) -> None:
        """Stop every running cell now (the runner is shutting down)."""
        ...


ENDED_WITHOUT = "the task ended without this cell's outcome"
"""The error of a cell whose task finished without yielding it (a bug in a batched attack)."""


def task_failure(task: Any, status: str, error: str, options: RunOptions, elapsed: float,
                 device: torch.device | None = None, finished: frozenset[int] = frozenset()
                 ) -> list[tuple[CellKind, Outcome]]:
    """A failure outcome for every cell of a task but the ``finished`` members (indices)
    whose outcomes arrived: a batched group's unfinished cells fail together, each record
    naming the group (``trial_batch``: its cells and ``task_seconds``, the task's time)."""
    from bench.cells.trials import members

    cells = members(task)
    out = []
    for i, cell in enumerate(cells):
        if i in finished:
            continue
        outcome = failure_outcome(cell, status, error, options, elapsed, device)
        if len(cells) > 1:
            outcome.record.trial_batch = {"cells": [c.cell_id for c in cells],
                                          "trials": len(cells), "task_seconds": elapsed}
        out.append((cell, outcome))
    return out


TIMEOUT_ERROR = re.compile(rf"(?:{SETUP}: )?exceeded the cell timeout of ([0-9.eE+-]+)s")


def timeout_error(task: Any, timeout: float) -> str:
    """The ``error`` of a task past its limit (a group: the cell timeout per cell, shared by
    its batched pass and the lone re-runs that follow a failed pass)."""
    from bench.cells.trials import members

    error = f"exceeded the cell timeout of {timeout:.15g}s"  # read back by timed_out_under
    n = len(members(task))
    return error + (f" (a task of {n} cells: {task_timeout(task, timeout):g}s for its batched "
                    "pass and any lone re-runs after it)" if n > 1 else "")


def timed_out_under(error: object) -> float | None:
    """The cell timeout a ``timeout`` record's ``error`` says it ran under (None: another
    kind of timeout, such as a task no cluster worker took)."""
    match = TIMEOUT_ERROR.match(error) if isinstance(error, str) else None
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


_WARM = False  # this process has run warm_up_worker


def worker_device(device: torch.device, index: int) -> torch.device:
    """Worker ``index``'s device: on a host with several GPUs, plain ``cuda`` spreads the
    workers over them in turn (``cuda:index mod n``) instead of stacking every worker on
    cuda:0; an indexed GPU, or the CPU, as given."""
    if device.type != "cuda" or device.index is not None:
        return device
    count = torch.cuda.device_count()
    return torch.device("cuda", index % count) if count > 1 else device


def release_device_cache(device: torch.device) -> None:
    """Hand a finished task's cached GPU memory back: a worker kept its largest cell's cache,
    which a neighbour packed on the same GPU (Ray's fractional ``gpus_per_task``) then lacked."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def warm_up_worker(device: torch.device | None = None) -> None:
    """Import every registered component (torchvision among them: seconds) and the scoring
    libraries a cell's setup first calls (its floor metrics: torchmetrics and what it pulls
    in) in a fresh worker, before its first task's clock starts, so that task's setup time
    and timeout are its own, not the worker's imports. A component that fails to import is
    left for the cell that uses it, which records the error. Once per process: a Ray worker
    calls it at every task's start. On a GPU it also creates the CUDA context, which had been
    the first cell's setup time."""
    global _WARM
    if _WARM:
        return
    _WARM = True
    if device is not None and device.type == "cuda":
        try:
            torch.empty(1, device=device)
            torch.cuda.synchronize(device)
        except Exception:  # noqa: BLE001 - the first cell meets it again, and records it
            pass
    from bench.registry import REGISTRIES
    from bench.scoring import floor_metrics

    for registry in REGISTRIES.values():
        try:
            registry.load()
        except Exception:  # noqa: BLE001 - the cell records it
            pass
    try:
        floor_metrics(torch.linspace(0.0, 1.0, 768).reshape(1, 3, 16, 16))  # no RNG drawn
    except Exception:  # noqa: BLE001 - a cell meets it again, and records it
        pass


def task_timeout(task: Any, timeout: float) -> float:
    """A task's time limit: the cell timeout for each cell it records."""
    from bench.cells.trials import members

    return timeout * len(members(task))


@dataclass(frozen=True)
class ExecutorOptions:
    """Settings of executors that run cells elsewhere (a cluster); ``None`` is "not given":
    the suite's ``resources`` or the executor's default apply."""

    address: str | None = None  # a cluster to join (``auto``, ``ray://HOST:PORT``)
    cpus_per_task: float | None = None
    gpus_per_task: float | None = None  # a fraction packs several cells on one GPU
    max_retries: int | None = None  # re-runs of a cell whose worker died

    def given(self) -> list[str]:
        """The options set, as their command-line flags."""
        return [f"--{k.replace('_', '-')}" for k, v in vars(self).items() if v is not None]

    def check(self, device: str, requested: str | None = None) -> None:
        """Refuse the values no executor can use, before any work (a dry run checks too);
        ``device`` is the run's device type (a CUDA run needs a GPU share per task),
        ``requested`` the ``--device`` given (an explicit ``cpu`` takes no GPU share: a Ray
        task given one runs on its GPU)."""
        cpus, gpus = self.cpus_per_task, self.gpus_per_task
        if device == "cuda" and gpus == 0:
            raise LeakbenchError("--device cuda with --gpus-per-task 0: give each task a GPU "
                                 "share (e.g. 0.25), or run on the CPU")
        if requested == "cpu" and gpus is not None and gpus > 0:
            raise LeakbenchError(f"--device cpu with --gpus-per-task {gpus:g}: a task given a "
                                 "GPU share runs on that GPU; drop one of the two")
        for name, value in (("cpus_per_task", cpus), ("gpus_per_task", gpus)):
            problem = None if value is None else resource_problem(name, value)  # nan, inf,
            if problem:  # 1e-5 and 1e300 reached Ray and were tracebacks
                raise LeakbenchError(f"--{name.replace('_', '-')}: {problem}")
        if self.max_retries is not None and not 0 <= self.max_retries <= MAX_TASK_RETRIES:
            raise LeakbenchError(f"--max-retries: expected 0 to {MAX_TASK_RETRIES}, got "
                                 f"{self.max_retries}")
        problem = address_problem(self.address)
        if problem:
            raise LeakbenchError(problem)


def host_port(address: str | None) -> tuple[str, str] | None:
    """A Ray address's host and port text (``HOST:PORT``, ``[IPv6]:PORT``, ``ray://HOST:PORT``,
    a trailing ``/`` allowed), or ``None`` for ``auto``, none, or an address without a port
    (Ray's to read)."""
    if address is None or address == "auto":
        return None
    rest = address.split("://", 1)[-1].rstrip("/")
    if rest.endswith("]"):  # [IPv6] without a port
        return None
    host, sep, port = rest.rpartition(":")
    return (host.strip("[]"), port) if sep else None


def address_problem(address: str | None) -> str | None:
    """Why a Ray address cannot be one: a port that is not ASCII digits from 1 to 65535 ("6²"
    passed ``str.isdigit`` and was a traceback, Arabic-Indic digits were read as a port), or
    no host (``:80``, ``ray://`` had passed, drawn the progress bar, then failed to connect)."""
    parts = host_port(address)
    if address is not None and address != "auto":
        host = parts[0] if parts else address.split("://", 1)[-1].rstrip("/").strip("[]")
        if not host.strip():
            return (f"--ray-address {address!r}: no host; expected auto, HOST:PORT or "
                    "ray://HOST:PORT")
    if parts and not (parts[1].isascii() and parts[1].isdigit() and 1 <= int(parts[1]) <= 65535):
        return f"--ray-address {address!r}: the port must be a number from 1 to 65535"
    return None


EXECUTORS: dict[str, Callable[..., Executor]] = {}


def register_executor(name: str) -> Callable[[type], type]:
    """Register an executor class: ``cls(device, timeout, jobs)``, plus ``options``
    (:class:`ExecutorOptions`) and ``threads`` (torch threads per worker, ``None``: the
    executor's default) when its constructor declares those parameters."""

    def wrap(cls: type) -> type:
        existing = EXECUTORS.get(name)  # a plug-in's "process" had silently replaced ours
        if existing is not None and existing is not cls and (
                existing.__module__, existing.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"executor {name!r} is registered twice")
        EXECUTORS[name] = cls
        return cls

    return wrap


ENTRY_POINT_GROUP = "leakbench.executors"


@functools.cache
def load_executors() -> None:
    """Import every module of ``bench/executors/`` (each registers its executor) and the
    ``leakbench.executors`` entry points of installed packages, once."""
    import_components(("bench.executors",), ENTRY_POINT_GROUP, lambda: len(EXECUTORS), "executor")


def make_executor(name: str, device: torch.device, timeout: float, jobs: int,
                  options: ExecutorOptions | None = None, threads: int | None = None
                  ) -> Executor:
    """The executor registered as ``name``; ``options`` and ``threads`` reach those that
    declare them."""
    if name not in EXECUTORS:
        load_executors()
    if name not in EXECUTORS:
        raise LeakbenchError(f"--executor: unknown executor {name!r}"
                             f"{suggest(name, EXECUTORS)}; known: {', '.join(sorted(EXECUTORS))}")
    cls = EXECUTORS[name]
    declared = inspect.signature(cls).parameters
    extra: dict[str, Any] = {}
    if "options" in declared:
        extra["options"] = options or ExecutorOptions()
    if "threads" in declared:
        extra["threads"] = threads
    return cls(device=device, timeout=timeout, jobs=jobs, **extra)
