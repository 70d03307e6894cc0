"""The inline executor: every cell in this process, one after another, without timeouts
(for debugging: breakpoints and tracebacks work)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from bench.cells.base import CellKind, RunOptions
from bench.cells.trials import run_task
from bench.executors.base import register_executor
from bench.records import Outcome


@register_executor("inline")
class InlineExecutor:
    def __init__(self, device: torch.device, timeout: float = 0.0, jobs: int = 0) -> None:
        self.device = device

    def run(self, cells: Sequence[CellKind], options: RunOptions
            ) -> Iterator[tuple[CellKind, Outcome]]:
        for task in cells:
            yield from run_task(task, self.device, options)

    def cancel(self) -> None:
        pass
