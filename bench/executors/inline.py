"""The inline executor: every cell in this process, one after another, without timeouts
(for debugging: breakpoints and tracebacks work). With ``threads`` given, torch uses that many
threads while the cells run, and this process's setting is restored after."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from bench.cells.base import CellKind, RunOptions, fix_float_mode
from bench.cells.trials import iter_task, members
from bench.executors.base import (
    ENDED_WITHOUT,
    register_executor,
    task_failure,
    warm_up_worker,
)
from bench.records import Outcome


@register_executor("inline")
class InlineExecutor:
    def __init__(self, device: torch.device, timeout: float = 0.0, jobs: int = 0,
                 threads: int | None = None) -> None:
        self.device, self.threads = device, threads
        self.workers = 1  # cells run at once, for the records' provenance

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        fix_float_mode()  # before torch's pool threads exist, if a caller has not yet made them
        if cells:  # imports before the first cell's clock, as in a worker process
            warm_up_worker(self.device)
        before = torch.get_num_threads()
        if self.threads is not None:
            torch.set_num_threads(self.threads)
        try:
            for task in cells:  # each cell's outcome as it finishes (a group's too): one
                cells_of = members(task)  # interrupted mid-group keeps the finished ones
                finished, t0 = set(), time.perf_counter()
                for i, outcome in iter_task(task, self.device, options):
                    finished.add(i)
                    yield cells_of[i], outcome
                yield from task_failure(task, "error", ENDED_WITHOUT, options,  # none, or
                                        time.perf_counter() - t0, self.device,  # a cell the
                                        frozenset(finished))  # task ended without
        finally:
            torch.set_num_threads(before)

    def cancel(self) -> None:
        pass
