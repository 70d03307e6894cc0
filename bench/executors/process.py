"""The process executor: cells in ``jobs`` spawned worker processes, one cell at a time each.

The parent watches the clock: a cell past the timeout has its worker killed and becomes a
``timeout`` outcome; a worker that dies becomes an ``error`` outcome naming its exit code.
Either way the matrix goes on with a fresh worker. Workers return outcomes through a queue
and write nothing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from bench.cells import CellKind, RunOptions, cell_from_json
from bench.executors.base import failure_outcome, register_executor
from bench.records import Outcome, Record


def _worker(tasks: Any, results: Any, device: str, threads: int) -> None:
    torch.set_num_threads(threads)
    dev = torch.device(device)
    parent = os.getppid()
    while True:
        try:
            item = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:  # the runner was killed: don't linger as an orphan
                return
            continue
        if item is None:
            return
        cell_json, options = item
        cell = cell_from_json(cell_json)
        results.put((cell.cell_id, "started", None))  # the cell's clock starts now
        outcome = cell.run(dev, options)
        results.put((cell.cell_id, "done", (outcome.record.to_json(), outcome.artifacts)))


@dataclass
class _Slot:
    process: Any
    tasks: Any
    cell: Any = None
    started: float | None = None  # when the worker began the cell


@register_executor("process")
class ProcessExecutor:
    def __init__(self, device: torch.device, timeout: float, jobs: int = 1) -> None:
        self.device, self.timeout, self.jobs = device, timeout, max(1, jobs)
        self._ctx = mp.get_context("spawn")  # fresh interpreters: no inherited thread pools
        self._slots: list[_Slot] = []

    def _start(self, results: Any) -> _Slot:
        tasks = self._ctx.Queue()
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        p = self._ctx.Process(target=_worker, args=(tasks, results, str(self.device), threads),
                              daemon=True)
        p.start()
        return _Slot(p, tasks)

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        results = self._ctx.Queue()
        pending = list(reversed(cells))
        self._slots = [self._start(results) for _ in range(min(self.jobs, len(cells)))]
        try:
            while pending or any(s.cell is not None for s in self._slots):
                for s in self._slots:
                    if s.cell is None and pending:
                        s.cell, s.started = pending.pop(), None
                        s.tasks.put((s.cell.to_json(), options))
                try:
                    cid, event, payload = results.get(timeout=0.2)
                except queue.Empty:
                    yield from self._reap(results, options)
                    continue
                for s in self._slots:
                    if s.cell is None or s.cell.cell_id != cid:
                        continue
                    if event == "started":
                        s.started = time.perf_counter()
                    else:
                        record, artifacts = payload
                        cell, s.cell = s.cell, None
                        yield cell, Outcome(Record.from_json(record), artifacts)
        finally:
            self.cancel()

    def _reap(self, results: Any, options: RunOptions) -> Iterator[tuple[CellKind, Outcome]]:
        """Timed-out cells and dead workers: a failure outcome and a fresh worker each."""
        now = time.perf_counter()
        for i, s in enumerate(self._slots):
            if s.cell is None:
                continue
            elapsed = now - s.started if s.started is not None else 0.0
            if elapsed > self.timeout:
                status, error = "timeout", f"exceeded the cell timeout of {self.timeout:g}s"
            elif not s.process.is_alive():
                status = "error"
                error = f"worker process died (exit code {s.process.exitcode})"
            else:
                continue
            s.process.kill()
            s.process.join()
            cell = s.cell
            self._slots[i] = self._start(results)
            yield cell, failure_outcome(cell, status, error, options, elapsed)

    def cancel(self) -> None:
        for s in self._slots:
            if s.process.is_alive():
                s.tasks.put(None)
        for s in self._slots:
            s.process.join(timeout=5)
            if s.process.is_alive():
                s.process.kill()
        self._slots = []
