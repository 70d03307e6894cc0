"""The process executor: cells in ``jobs`` spawned worker processes, one cell at a time each,
each with ``threads`` torch threads (default: the usable cores split among the workers).

The parent watches the clock: a cell past the timeout has its worker killed and becomes a
``timeout`` outcome; a worker that dies becomes an ``error`` outcome naming its exit code.
Either way the matrix goes on with a fresh worker. Workers return outcomes through a queue
and write nothing.

A worker dies with its parent, even mid-cell: on Linux the kernel sends it SIGKILL when the
parent dies (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread exits the process within
:data:`WATCHDOG_S` seconds of the parent's PID going away. A killed run leaves no worker
computing behind it.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.cells import CellKind, RunOptions, cell_from_json
from bench.cells.trials import iter_task, members
from bench.cores import usable_cores, worker_cores
from bench.executors.base import register_executor, task_failure, task_timeout, timeout_error
from bench.records import Outcome, Record

WATCHDOG_S = 0.25


def _parent_gone(parent: int) -> bool:
    return os.getppid() != parent


def die_with_parent(parent: int) -> None:
    """Exit this process promptly once ``parent`` is gone, whatever it is doing."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if _parent_gone(parent):  # died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while not _parent_gone(parent):
            time.sleep(WATCHDOG_S)
        os._exit(1)

    threading.Thread(target=watch, name="leakbench-watchdog", daemon=True).start()


def pin_process(cores: list[int]) -> None:
    """Pin every thread of this process to ``cores`` (the BLAS pools numpy and scipy started
    at import too; threads started later inherit it); a sandbox that refuses leaves it
    unpinned."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:
            pass


def _worker(tasks: Any, results: Any, device: str, threads: int, parent: int,
            cores: list[int] | None = None) -> None:
    die_with_parent(parent)
    if cores:
        pin_process(cores)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    while True:
        try:
            item = tasks.get(timeout=1.0)
        except queue.Empty:
            continue
        if item is None:
            return
        task_json, options = item
        task = cell_from_json(task_json)  # a cell, or a group of batched trials
        results.put((task.cell_id, "started", None))  # the task's clock starts now
        for i, outcome in iter_task(task, dev, options):  # each member as it finishes: a
            results.put((task.cell_id, "cell", (i, outcome.record.to_json(),  # later hang
                                                outcome.artifacts)))  # cannot take it down
        results.put((task.cell_id, "done", None))


STARTUP_GRACE_SECONDS = 120.0  # a worker that never begins its cell times out after this


@dataclass
class _Slot:
    process: Any
    tasks: Any
    cell: Any = None
    sent: float = 0.0  # when the cell was handed to the worker
    started: float | None = None  # when the worker began the cell
    finished: set[int] = field(default_factory=set)  # members whose outcomes arrived


@register_executor("process")
class ProcessExecutor:
    def __init__(self, device: torch.device, timeout: float, jobs: int = 1,
                 threads: int | None = None) -> None:
        self.device, self.timeout, self.jobs = device, timeout, max(1, jobs)
        self.threads = threads if threads is not None else max(1, usable_cores() // self.jobs)
        self.workers = self.jobs  # cells run at once (fewer if fewer cells), for provenance
        self._ctx = mp.get_context("spawn")  # fresh interpreters: no inherited thread pools
        self._slots: list[_Slot] = []
        self._started = 0  # workers this run keeps (fewer than jobs for fewer cells)
        self.on_start: Callable[[int], None] | None = None  # told each worker's PID

    def _start(self, results: Any, index: int) -> _Slot:
        tasks = self._ctx.Queue()
        # worker i: its own cores, when the workers this run starts fill the mask
        cores = worker_cores(index, self._started, self.threads)
        p = self._ctx.Process(target=_worker, daemon=True,
                              args=(tasks, results, str(self.device), self.threads, os.getpid(),
                                    cores))
        p.start()
        if self.on_start is not None and p.pid is not None:
            self.on_start(p.pid)
        return _Slot(p, tasks)

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        results = self._ctx.Queue()
        pending = list(reversed(cells))
        self._started = min(self.jobs, len(cells))
        self._slots = [self._start(results, i) for i in range(self._started)]
        self.workers = max(1, len(self._slots))
        try:
            while pending or any(s.cell is not None for s in self._slots):
                for s in self._slots:
                    if s.cell is None and pending:
                        s.cell, s.started, s.sent = pending.pop(), None, time.perf_counter()
                        s.finished = set()
                        s.tasks.put((s.cell.to_json(), options))
                yield from self._drain(results, wait=0.2)
                # every turn, not only when the queue is quiet: busy batch-mates must not
                # shield a hung cell from its timeout
                yield from self._reap(results, options)
        finally:
            self.cancel()

    def _drain(self, results: Any, wait: float = 0.0) -> Iterator[tuple[CellKind, Outcome]]:
        """Every event queued now (waiting up to ``wait`` seconds for the first): a task
        started, a member's outcome (yielded), or a task done."""
        try:
            event = results.get(timeout=wait) if wait else results.get_nowait()
        except queue.Empty:
            return
        while True:
            cid, kind, payload = event
            for s in self._slots:
                if s.cell is None or s.cell.cell_id != cid:
                    continue
                if kind == "started":
                    s.started = time.perf_counter()
                elif kind == "cell":
                    i, record, artifacts = payload
                    s.finished.add(i)
                    yield members(s.cell)[i], Outcome(Record.from_json(record), artifacts)
                else:  # "done"
                    s.cell = None
            try:
                event = results.get_nowait()
            except queue.Empty:
                return

    def _reap(self, results: Any, options: RunOptions) -> Iterator[tuple[CellKind, Outcome]]:
        """Timed-out cells and dead workers: a failure outcome for each member whose own
        outcome did not arrive (read after the worker is gone: what it sent first counts),
        and a fresh worker."""
        now = time.perf_counter()
        for i in range(len(self._slots)):
            s = self._slots[i]
            if s.cell is None:
                continue
            if s.started is not None:
                elapsed = now - s.started
            else:  # not begun: a fresh worker imports torch first; allow for it, not forever
                elapsed = max(0.0, now - s.sent - STARTUP_GRACE_SECONDS)
            if elapsed > task_timeout(s.cell, self.timeout):
                status, error = "timeout", timeout_error(s.cell, self.timeout)
            elif not s.process.is_alive():
                status = "error"
                error = f"worker process died (exit code {s.process.exitcode})"
            else:
                continue
            s.process.kill()
            s.process.join()
            yield from self._drain(results)  # the outcomes it sent before it stopped
            task = s.cell
            self._slots[i] = self._start(results, i)
            if task is not None:  # None: its last outcome was in the queue after all
                yield from task_failure(task, status, error, options, elapsed, self.device,
                                        frozenset(s.finished))

    def cancel(self) -> None:
        for s in self._slots:
            if s.process.is_alive():
                s.tasks.put(None)
        for s in self._slots:
            s.process.join(timeout=5)
            if s.process.is_alive():
                s.process.kill()
        self._slots = []
