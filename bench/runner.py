"""The runner: plans a suite's cells against the store, hands the ones to run to an executor,
shows progress, and is the only writer of the record store.

Cells that already have a record are skipped (resume); ``force`` re-runs them and
``retry_failed`` re-runs ``error``/``timeout`` ones. Skipped cells are records too, written at
once with their reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.cells.base import RunOptions
from bench.executors import ExecutorOptions, failure_outcome, make_executor
from bench.records import FAILURE_STATUSES, Outcome
from bench.registry import LeakbenchError
from bench.store import done_ids, load_record, record_path, save_outcome
from bench.suite import Suite, all_cells


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LeakbenchError("--device cuda: CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise LeakbenchError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def run_options(suite: Suite) -> RunOptions:
    """The settings every cell of a suite's run shares."""
    return RunOptions(suite.success, tuple(sorted(suite.perceptual.items())))


@dataclass
class RunSummary:
    suite: str
    out_dir: Path
    total: int
    counts: Counter = field(default_factory=Counter)
    already_done: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in
                 ("ok", "diverged", "error", "timeout", "skipped") if self.counts[s]]
        done = f", {self.already_done} already done" if self.already_done else ""
        ran = ", ".join(parts) or "nothing to run"
        return (f"{self.suite}: {self.total} cells — {ran}{done} "
                f"in {self.seconds:.1f}s → {self.out_dir}")


def plan(suite: Suite, out_dir: Path, force: bool = False, retry_failed: bool = False
         ) -> list[tuple[Any, str]]:
    """Every cell with its status: ``done``, ``to run`` or ``skipped: reason``."""
    done = done_ids(out_dir)
    rows = []
    for cell in all_cells(suite):
        cid = cell.cell_id
        if cid in done and not force:
            if retry_failed and load_record(record_path(out_dir, cid))["status"] in \
                    FAILURE_STATUSES:
                rows.append((cell, "to run"))
            else:
                rows.append((cell, "done"))
        elif cell.skip_reason:
            rows.append((cell, f"skipped: {cell.skip_reason}"))
        else:
            rows.append((cell, "to run"))
    return rows


def run_suite(suite: Suite, out_dir: Path, jobs: int = 1, device: str = "auto",
              force: bool = False, retry_failed: bool = False, progress: bool = True,
              executor: str | None = None,
              executor_options: ExecutorOptions | None = None) -> RunSummary:
    """Run every cell not yet recorded. ``executor`` defaults to ``process`` with ``jobs``
    workers, or ``inline`` (no timeouts) for ``jobs=0``; ``executor_options`` (a cluster's
    address, per-task resources, retries) reach executors that take them, the suite's
    ``resources`` filling what is not given."""
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    rows = plan(suite, out_dir, force, retry_failed)
    options = run_options(suite)
    summary = RunSummary(suite.name, out_dir, len(rows))
    summary.already_done = sum(1 for _, s in rows if s == "done")
    t0 = time.perf_counter()
    todo: list[Any] = []
    for cell, status in rows:
        if status.startswith("skipped"):
            _write(out_dir, failure_outcome(cell, "skipped", cell.skip_reason or "", options,
                                            0.0), summary)
        elif status == "to run":
            todo.append(cell)
    name = executor or ("inline" if jobs <= 0 else "process")
    bar = _progress(len(todo), suite.name, progress)
    try:
        ex = make_executor(name, dev, suite.timeout, jobs,
                           with_resources(executor_options, suite.resources))
        for _, outcome in ex.run(todo, options):
            _write(out_dir, outcome, summary)
            failures = sum(summary.counts[s] for s in FAILURE_STATUSES)
            bar.set_postfix(failed=failures, diverged=summary.counts["diverged"], refresh=False)
            bar.update(1)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def with_resources(options: ExecutorOptions | None, resources: dict[str, Any]
                   ) -> ExecutorOptions:
    """``options`` with the suite's per-task resources where the command line gave none."""
    options = options or ExecutorOptions()
    fill = {k: v for k, v in resources.items() if v is not None and getattr(options, k) is None}
    return dataclasses.replace(options, **fill)


def _write(out_dir: Path, outcome: Outcome, summary: RunSummary) -> None:
    record = outcome.record
    save_outcome(out_dir, record.to_json(), outcome.artifacts)
    summary.counts[record.status] += 1


def _progress(total: int, name: str, enabled: bool) -> Any:
    return tqdm(total=total, desc=name, unit="cell", disable=not enabled, dynamic_ncols=True)
