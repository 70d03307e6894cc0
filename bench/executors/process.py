"""The process executor: cells in ``jobs`` spawned worker processes, one cell at a time each,
each with ``threads`` torch threads (default: the usable cores split among the workers).

The parent watches the clock: a cell past the timeout has its worker killed and becomes a
``timeout`` outcome; a worker that dies becomes an ``error`` outcome naming its exit code.
Either way the matrix goes on with a fresh worker. Each worker sends its events (a task
started, each cell's outcome as it finishes, the task done) through a pipe of its own and
writes nothing: a worker killed halfway through sending a large outcome leaves a torn message
that reads as the end of its pipe, never a read that blocks the parent or a lock held on a
channel the other workers share.

A worker dies with its parent, even mid-cell: on Linux the kernel sends it SIGKILL when the
parent dies (``PR_SET_PDEATHSIG``), and everywhere a watchdog thread exits the process within
:data:`WATCHDOG_S` seconds of the parent's PID going away. A killed run leaves no worker
computing behind it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for_any
from typing import Any

import torch

from bench.cells import CellKind, RunOptions, cell_from_json
from bench.cells.base import fix_float_mode
from bench.cells.trials import iter_task, members
from bench.cores import usable_cores, worker_cores
from bench.executors.base import (
    ENDED_WITHOUT,
    register_executor,
    release_device_cache,
    task_failure,
    task_timeout,
    timeout_error,
    warm_up_worker,
    worker_device,
)
from bench.records import Outcome, Record
from bench.stages import NEVER_BEGAN, STAGE, in_stage

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


def _worker(tasks: Any, events: Connection, device: str, threads: int, parent: int,
            cores: list[int] | None = None) -> None:
    die_with_parent(parent)
    # Ctrl-C reaches the whole process group: the parent handles it (one line, the workers
    # stopped by cancel()); a worker that raised KeyboardInterrupt printed a traceback each
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fix_float_mode()  # before torch's thread pool exists: its threads inherit the mode
    if cores:
        pin_process(cores)
    torch.set_num_threads(threads)
    dev = torch.device(device)
    warm_up_worker(dev)  # before any task's clock starts
    while True:
        try:
            item = tasks.get(timeout=1.0)
        except queue.Empty:
            continue
        if item is None:
            return
        task_json, options = item
        task = cell_from_json(task_json)  # a cell, or a group of batched trials
        events.send(("started", None))  # the task's clock starts now
        for i, outcome in iter_task(task, dev, options, marks=True):  # each member as it
            if i == STAGE:  # finishes (a later hang cannot take it down), and its stages
                events.send(("stage", outcome))
                continue
            events.send(("cell", (i, outcome.record.to_json(), outcome.artifacts)))
        release_device_cache(dev)
        events.send(("done", None))


def receive(events: Connection) -> list[Any]:
    """Every whole message waiting in a worker's pipe, without blocking on one that is not
    there; ``None`` after them when the pipe has ended (the worker exited or was killed, a
    message it was sending torn: what came before it counts, the torn one does not)."""
    out: list[Any] = []
    try:
        while events.poll():
            out.append(events.recv())
    except (EOFError, OSError):
        out.append(None)
    return out


STARTUP_GRACE_SECONDS = 120.0  # a worker that never begins its cell times out after this


_MAIN_LOCK = threading.Lock()  # runs in threads of one process start workers one at a time


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Start workers without re-running ``__main__`` from a file that does not exist: a
    script read from stdin (``python - <<EOF``) has ``__file__ == "<stdin>"``, which spawn
    tried to run in each worker, and every cell became an error record ("worker process
    died (exit code 1)"). Workers import only leakbench, so they start as under ``python
    -c``, where ``__main__`` has no file."""
    with _MAIN_LOCK:
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if main is None or getattr(main, "__spec__", None) is not None or path is None or \
                os.path.isfile(path):
            yield
            return
        del main.__file__
        try:
            yield
        finally:
            main.__file__ = path


@contextlib.contextmanager
def _interrupt_ignored_by_children() -> Iterator[None]:
    """Start a worker with SIGINT ignored from its first instruction: a disposition of
    SIG_IGN survives the spawn's exec, and Python then installs no KeyboardInterrupt handler.
    A Ctrl-C while a worker still imported torch (seconds, before ``_worker`` ignores it)
    printed the worker's traceback above the parent's one line. The parent ignores SIGINT
    only while ``start`` runs (milliseconds); off the main thread nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:  # None: a handler set outside Python, which Python cannot put back
        signal.signal(signal.SIGINT, signal.default_int_handler if previous is None
                      else previous)


@dataclass
class _Slot:
    process: Any
    tasks: Any
    events: Connection | None  # the worker's pipe; None once it has ended
    cell: Any = None
    sent: float = 0.0  # when the cell was handed to the worker
    started: float | None = None  # when the worker began the cell
    stage: str | None = None  # the stage its worker last said the task entered
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

    def _start(self, index: int) -> _Slot:
        tasks = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        # worker i: its own cores, when the workers this run starts fill the mask
        cores = worker_cores(index, self._started, self.threads)
        p = self._ctx.Process(target=_worker, daemon=True,
                              args=(tasks, writer, str(worker_device(self.device, index)),
                                    self.threads, os.getpid(), cores))
        with _main_not_rerun(), _interrupt_ignored_by_children():
            p.start()
        writer.close()  # the worker holds the only write end: its death ends the pipe
        if self.on_start is not None and p.pid is not None:
            self.on_start(p.pid)
        return _Slot(p, tasks, reader)

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        pending = list(reversed(cells))
        self._started = min(self.jobs, len(cells))
        self._slots = [self._start(i) for i in range(self._started)]
        self.workers = max(1, len(self._slots))
        try:
            while pending or any(s.cell is not None for s in self._slots):
                for i, s in enumerate(self._slots):
                    if s.cell is None and pending:
                        if s.events is None or not s.process.is_alive():  # died idle
                            s = self._replace(i)
                        s.cell, s.started, s.sent = pending.pop(), None, time.perf_counter()
                        s.stage = None
                        s.finished = set()
                        s.tasks.put((s.cell.to_json(), options))
                yield from self._drain(options, wait=0.2)
                # every turn, not only when the pipes are quiet: busy batch-mates must not
                # shield a hung cell from its timeout
                yield from self._reap(options)
        finally:
            self.cancel()

    def _drain(self, options: RunOptions, wait: float = 0.0
               ) -> Iterator[tuple[CellKind, Outcome]]:
        """Every event the workers have sent (waiting up to ``wait`` seconds for the first):
        a task started, a member's outcome (yielded), or a task done."""
        open_ = {s.events: s for s in self._slots if s.events is not None}
        if not open_:  # every pipe ended: the dispatch loop restarts a dead worker it gives a task
            time.sleep(wait)
            return
        for events in wait_for_any(list(open_), timeout=wait):
            yield from self._handle(open_[events], options)

    def _handle(self, s: _Slot, options: RunOptions) -> Iterator[tuple[CellKind, Outcome]]:
        """The events waiting in slot ``s``'s pipe, in the order its worker sent them; a
        member the task ended without an outcome for fails (``error``), as on Ray."""
        assert s.events is not None
        for event in receive(s.events):
            if event is None:  # the pipe ended: the worker is gone (``_reap`` says why)
                s.events.close()
                s.events = None
                return
            kind, payload = event
            if s.cell is None:
                continue
            if kind == "started":
                s.started = time.perf_counter()
            elif kind == "stage":
                s.stage = payload
            elif kind == "cell":
                i, record, artifacts = payload
                s.finished.add(i)
                yield members(s.cell)[i], Outcome(Record.from_json(record), artifacts)
            else:  # "done"
                task, s.cell = s.cell, None
                yield from task_failure(task, "error", ENDED_WITHOUT, options,
                                        time.perf_counter() - (s.started or s.sent),
                                        self.device, frozenset(s.finished))

    def _reap(self, options: RunOptions) -> Iterator[tuple[CellKind, Outcome]]:
        """Timed-out cells and dead workers: a failure outcome for each member whose own
        outcome did not arrive (read after the worker is gone: what it sent first counts),
        timed from the hand-off (or the start, where it began); the slot gets a fresh worker
        when it is next given a task (none is started for a run with none left)."""
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
                status = "timeout"
            elif not s.process.is_alive():
                status, died = "error", f"worker process died (exit code {s.process.exitcode})"
            else:
                continue
            wall = now - (s.started if s.started is not None else s.sent)
            planned = s.cell
            s.process.kill()
            s.process.join()
            # what it sent before it stopped (its outcomes, its start, its stage marks) is
            # read before the error is worded: it may have died with them still unread
            if s.events is not None:
                yield from self._handle(s, options)
            if status == "error":
                error = in_stage(s.stage, died)  # died in its setup: no attack measured
            elif s.started is not None:
                error = in_stage(s.stage, timeout_error(planned, self.timeout))
            else:
                error = (f"{NEVER_BEGAN}its worker had not started {now - s.sent:.0f}s after "
                         "the hand-off")
            task, s.cell = s.cell, None
            if s.events is not None:
                s.events.close()
                s.events = None  # the dispatch loop replaces a dead worker before its next task
            if task is not None:  # None: its last outcome was in its pipe after all
                yield from task_failure(task, status, error, options, wall, self.device,
                                        frozenset(s.finished))

    def _replace(self, i: int) -> _Slot:
        """A fresh worker in slot ``i``, its old one killed and its pipe closed."""
        s = self._slots[i]
        s.process.kill()
        s.process.join()
        if s.events is not None:
            s.events.close()
        self._slots[i] = self._start(i)
        return self._slots[i]

    def cancel(self) -> None:
        for s in self._slots:
            if s.cell is not None:  # busy: it reads no stop before its cell ends
                s.process.kill()
            elif s.process.is_alive():
                s.tasks.put(None)
        deadline = time.monotonic() + 5
        for s in self._slots:
            s.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if s.process.is_alive():
                s.process.kill()
            if s.events is not None:
                s.events.close()
        self._slots = []
