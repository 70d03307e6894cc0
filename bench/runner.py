"""The runner: executes a suite's cells in worker processes, resumably, with per-cell timeouts.

Each worker process takes one cell at a time, runs it and writes its record atomically.
The parent watches the clock: a cell past the suite's timeout has its worker killed
and a ``timeout`` record written, and a worker that dies leaves an ``error`` record.
Either way the matrix goes on. Cells that already have a record are skipped (resume).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.registry import LeakbenchError
from bench.store import done_ids, load_record, record_path, save_record
from bench.suite import Cell, Suite

FAILURE_STATUSES = ("error", "timeout")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LeakbenchError("--device cuda: CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise LeakbenchError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


@dataclass(frozen=True)
class RunOptions:
    """Suite-level settings every cell of a run shares (they are not part of cell identity)."""

    success_psnr: float = 20.0
    perceptual: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, suite: Suite) -> RunOptions:
        return cls(suite.success_psnr, tuple(sorted(suite.perceptual.items())))


def all_cells(suite: Suite) -> list[Any]:
    """The attack cells of the matrix, then the utility-track cells (if the suite has any)."""
    from bench.utility import utility_cells

    return [*suite.expand(), *utility_cells(suite)]


def cell_from_json(d: dict[str, Any]) -> Any:
    if d.get("kind") == "utility":
        from bench.utility import UtilityCell

        return UtilityCell.from_json(d)
    return Cell.from_json(d)


def execute_and_save(cell: Any, out_dir: Path, device: torch.device, options: RunOptions
                     ) -> dict[str, Any]:
    """Run one cell and write its record (and picture) atomically; returns the record."""
    if getattr(cell, "kind", "attack") == "utility":
        from bench.utility import run_utility

        record = run_utility(cell, device)
        save_record(out_dir, record)
        return record

    from bench.pictures import save_cell_arrays, save_cell_picture
    from bench.pipeline import run_cell

    record = run_cell(cell, device, options.success_psnr, dict(options.perceptual))
    images = record.pop("_images", None)
    if images is not None:
        try:
            record["picture"] = save_cell_picture(out_dir, record["cell_id"], *images)
            record["arrays"] = save_cell_arrays(out_dir, record["cell_id"], *images)
        except Exception as e:  # a picture is a nicety: never lose the record over it
            record["picture"] = None
            record["picture_error"] = f"{type(e).__name__}: {e}"
    save_record(out_dir, record)
    return record


def failure_record(cell: Any, status: str, error: str, options: RunOptions,
                   elapsed: float) -> dict[str, Any]:
    """The record of a cell that produced none itself: skipped, timed out, or its worker died."""
    from bench.pipeline import RECORD_VERSION
    from bench.provenance import provenance

    record = {"record_version": RECORD_VERSION, "kind": "attack", **cell.to_json(),
              "cell_id": cell.cell_id, "defense_label": cell.defense_label,
              "arch_label": cell.arch.label, "dataset_label": cell.dataset.label,
              "derived_seeds": cell.derived_seeds(),
              "provenance": provenance(torch.device("cpu")), "status": status, "error": error,
              "metrics": None, "timing": {"wall_seconds": elapsed}}
    if record["kind"] == "attack":
        record.update(attack_label=cell.attack.label, success_psnr=options.success_psnr)
    return record


def _worker(tasks: Any, results: Any, out_dir: str, device: str, threads: int) -> None:
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
        results.put((cell.cell_id, "started"))  # the cell's clock starts now, not at spawn
        record = execute_and_save(cell, Path(out_dir), dev, options)
        results.put((cell.cell_id, record["status"]))


@dataclass
class _Slot:
    process: Any
    tasks: Any
    cell: Any = None
    started: float | None = None  # when the worker began the cell


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
              force: bool = False, retry_failed: bool = False, progress: bool = True
              ) -> RunSummary:
    """Run every cell not yet recorded. ``jobs=0`` runs inline, without timeouts."""
    out_dir = Path(out_dir)
    dev = resolve_device(device)
    rows = plan(suite, out_dir, force, retry_failed)
    options = RunOptions.of(suite)
    summary = RunSummary(suite.name, out_dir, len(rows))
    summary.already_done = sum(1 for _, s in rows if s == "done")
    t0 = time.perf_counter()
    todo: list[Any] = []
    for cell, status in rows:
        if status.startswith("skipped"):  # skipped cells are records too, written at once
            save_record(out_dir, failure_record(cell, "skipped", cell.skip_reason or "",
                                                options, 0.0))
            summary.counts["skipped"] += 1
        elif status == "to run":
            todo.append(cell)
    bar = _progress(len(todo), suite.name, progress)
    try:
        if jobs <= 0:
            for cell in todo:
                record = execute_and_save(cell, out_dir, dev, options)
                _tick(bar, summary, record["status"])
        else:
            _run_pool(todo, suite.timeout, options, out_dir, dev, jobs, bar, summary)
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - t0
    return summary


def _progress(total: int, name: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=name, unit="cell", disable=not enabled, dynamic_ncols=True)


def _tick(bar: Any, summary: RunSummary, status: str) -> None:
    summary.counts[status] += 1
    failures = sum(summary.counts[s] for s in FAILURE_STATUSES)
    bar.set_postfix(failed=failures, diverged=summary.counts["diverged"], refresh=False)
    bar.update(1)


def _run_pool(todo: list[Any], timeout: float, options: RunOptions, out_dir: Path,
              device: torch.device, jobs: int, bar: Any, summary: RunSummary) -> None:
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited torch thread pools
    results = ctx.Queue()
    threads = max(1, (os.cpu_count() or 1) // jobs)

    def start() -> _Slot:
        tasks = ctx.Queue()
        p = ctx.Process(target=_worker, args=(tasks, results, str(out_dir), str(device), threads),
                        daemon=True)
        p.start()
        return _Slot(p, tasks)

    pending = list(reversed(todo))
    slots = [start() for _ in range(min(jobs, len(todo)))]
    by_id = {c.cell_id: c for c in todo}
    try:
        while pending or any(s.cell is not None for s in slots):
            for s in slots:
                if s.cell is None and pending:
                    s.cell, s.started = pending.pop(), None
                    s.tasks.put((s.cell.to_json(), options))
            try:
                cid, status = results.get(timeout=0.2)
                for s in slots:
                    if s.cell is not None and s.cell.cell_id == cid:
                        if status == "started":
                            s.started = time.perf_counter()
                        else:
                            s.cell = None
                            _tick(bar, summary, status)
                continue
            except queue.Empty:
                pass
            now = time.perf_counter()
            for i, s in enumerate(slots):
                if s.cell is None:
                    continue
                elapsed = now - s.started if s.started is not None else 0.0
                if elapsed > timeout:
                    status, error = "timeout", f"exceeded the cell timeout of {timeout:g}s"
                elif not s.process.is_alive():
                    status = "error"
                    error = f"worker process died (exit code {s.process.exitcode})"
                else:
                    continue
                s.process.kill()
                s.process.join()
                path = record_path(out_dir, s.cell.cell_id)
                if path.exists():  # it finished as the clock ran out: keep its own record
                    status = load_record(path)["status"]
                else:
                    save_record(out_dir, failure_record(by_id[s.cell.cell_id], status, error,
                                                        options, elapsed))
                _tick(bar, summary, status)
                slots[i] = start()
    finally:
        for s in slots:
            if s.process.is_alive():
                s.tasks.put(None)
        for s in slots:
            s.process.join(timeout=5)
            if s.process.is_alive():
                s.process.kill()
