"""The runner: plans a suite's cells against the store, hands the ones to run to an executor,
shows progress, and is the only writer of the record store.

Cells that already have a sound record are skipped (resume; damaged records are quarantined
and their cells run again); ``force`` re-runs them and ``retry_failed`` re-runs
``error``/``timeout`` ones. Skipped cells are records too, written at once with their reason.

Before any work: the grid's size is checked against ``max_cells``, the output folder is locked
(one run per folder), and every dataset the cells to run use is opened once.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.cache import cache_problem
from bench.cells.base import RunOptions
from bench.cells.trials import DEFAULT_TRIALS, group_trials
from bench.convolutions import DEFAULT_CPU_CONV, check_cpu_conv
from bench.cores import plan_parallelism, usable_cores, warn_oversubscribed
from bench.executors import ExecutorOptions, failure_outcome, make_executor
from bench.lock import RunLock
from bench.outputs import (
    blocked_cell_file,
    leaderboard_problem,
    out_folder_problem,
    writable_problem,
)
from bench.preflight import (
    DataError,
    preflight_cells,
    preflight_perceptual,
    scored_with_lpips,
)
from bench.prepare import prepare_attacks
from bench.records import FAILURE_STATUSES, Outcome
from bench.registry import LeakbenchError, warn
from bench.resume import iter_plan, plan  # noqa: F401  (plan: kept importable from here)
from bench.stages import NEVER_BEGAN
from bench.store import (
    NEWER,
    PICTURES,
    RECORDS,
    remove_stale_temporaries,
    save_outcome,
)
from bench.suite import Suite, count_cells

MAX_CELLS = 10_000
"""A run of a larger grid (before ``exclude``) is refused unless ``max_cells`` allows it."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise LeakbenchError("--device cuda: CUDA is not available on this machine")
    if name not in ("cpu", "cuda"):
        raise LeakbenchError(f"--device: expected auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def gpu_jobs(jobs: int | None, device: torch.device) -> int | None:
    """Workers for a run on CUDA: one per GPU unless ``--jobs`` says (one per core had put
    every worker, each with its own CUDA context and cache, on one GPU, where each cell's
    timed attack also ran the others' kernels). More workers than GPUs are warned of.
    ``jobs`` as given on the CPU, and for an inline run (0)."""
    if device.type != "cuda" or jobs == 0:
        return jobs
    gpus = 1 if device.index is not None else max(1, torch.cuda.device_count())
    if jobs is None:
        return gpus
    if jobs > gpus:
        warn(f"--jobs {jobs} on {gpus} GPU(s): workers share a GPU, so each cell's attack "
             "time includes the kernels of the others on it")
    return jobs


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
    parallelism: str = ""  # e.g. "2 workers × 1 thread", when cells ran
    leaderboard: Path | None = None  # written before the run let go of its folder
    leaderboard_problem: str = ""  # why none was (no attack records), for after the summary

    def line(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in
                 ("ok", "diverged", "error", "timeout", "skipped") if self.counts[s]]
        done = f", {self.already_done} already done" if self.already_done else ""
        ran = ", ".join(parts) or "nothing to run"
        how = f" ({self.parallelism})" if self.parallelism else ""
        return (f"{self.suite}: {self.total} cells — {ran}{done} "
                f"in {self.seconds:.1f}s{how} → {self.out_dir}")


def check_size(suite: Suite, max_cells: int | None = MAX_CELLS) -> int:
    """The grid's size; a LeakbenchError when it is above ``max_cells`` (None: no limit)."""
    n = count_cells(suite)
    if max_cells is not None and n > max_cells:
        raise LeakbenchError(f"{suite.source or suite.name}: the matrix has {n} cells (before "
                             f"exclude), above the limit of {max_cells}: pass --max-cells {n} "
                             f"to run it anyway")
    return n


def run_suite(suite: Suite, out_dir: Path, jobs: int | None = None, device: str = "auto",
              force: bool = False, retry_failed: bool = False, progress: bool = True,
              executor: str | None = None, max_cells: int | None = MAX_CELLS,
              executor_options: ExecutorOptions | None = None,
              threads: int | None = None, trials: int = DEFAULT_TRIALS,
              cpu_conv: str = DEFAULT_CPU_CONV, leaderboard: bool = False) -> RunSummary:
    """Run every cell not yet recorded. ``executor`` defaults to ``process`` with ``jobs``
    workers of ``threads`` torch threads each, or ``inline`` (no timeouts) for ``jobs=0``;
    ``None`` is "not given" and :func:`bench.cores.plan_parallelism` fills it from the usable
    cores (default: one worker per core, one thread each). ``executor_options`` (a cluster's
    address, per-task resources, retries) reach executors that take them, the suite's
    ``resources`` filling what is not given; Ray sizes its tasks by them (``threads`` alone
    sets a task's CPUs, and with them only its torch threads). Cells that differ only by
    seed run as one batched pass of up to ``trials`` cells where their attack vectorises (1:
    every cell alone). ``cpu_conv``:
    the kernels of the attacks' CPU convolutions (:mod:`bench.convolutions`). Refuses a grid
    above ``max_cells`` and a folder another live run holds. ``leaderboard``: render the
    folder's leaderboard (:attr:`RunSummary.leaderboard`) while the run still holds the
    folder, so that no other run's records enter it half-way."""
    out_dir = Path(out_dir)
    problem = out_folder_problem(out_dir)  # a file, or records/records/ inside a store
    if problem:
        raise LeakbenchError(problem)
    check_cpu_conv(cpu_conv)
    if trials < 1:
        raise LeakbenchError(f"trials per pass must be at least 1, got {trials}")
    dev = resolve_device(device)
    name = executor or ("inline" if jobs == 0 else "process")
    executor_options = executor_options or ExecutorOptions()
    executor_options.check(dev.type, requested=device)
    if name == "ray" and device == "cpu" and executor_options.gpus_per_task is None and \
            (suite.resources.get("gpus_per_task") or 0) > 0:
        warn(f"{suite.name}: resources.gpus_per_task {suite.resources['gpus_per_task']:g} not "
             "used: --device cpu runs every task on the CPU")
        executor_options = replace(executor_options, gpus_per_task=0.0)
    if name == "inline" and jobs is None:
        jobs = 0  # one cell at a time: it gets every core
    if name == "process":
        jobs = gpu_jobs(jobs, dev)
    if name != "ray":  # Ray: the cluster's resources decide how many tasks run at once
        jobs, threads = plan_parallelism(jobs, threads, usable_cores(), quiet=True)
    check_size(suite, max_cells)
    problem = leaderboard_problem(out_dir) if leaderboard else None
    if problem:
        raise LeakbenchError(problem)
    with RunLock(out_dir) as lock:
        summary = _run_locked(suite, out_dir, dev, (name, jobs or 0, threads), force,
                              retry_failed, progress, executor_options, lock, trials,
                              replace(run_options(suite), cpu_conv=cpu_conv))
        if leaderboard and (out_dir / RECORDS).is_dir():
            from bench.leaderboard import write_leaderboard
            from bench.leaderboard.frames import NoAttackRecords

            try:
                summary.leaderboard = write_leaderboard(out_dir)
            except NoAttackRecords as e:  # a suite of utility cells alone: they ran
                warn(f"no leaderboard: {e}")
            except LeakbenchError as e:
                summary.leaderboard_problem = str(e)
        return summary


def _run_locked(suite: Suite, out_dir: Path, dev: torch.device,
                parallel: tuple[str, int, int | None], force: bool, retry_failed: bool,
                progress: bool, executor_options: ExecutorOptions | None, lock: RunLock,
                trials: int, options: RunOptions) -> RunSummary:
    remove_stale_temporaries(out_dir)  # half-writes of a killed run: this run owns the folder
    problem = cache_problem()  # trained victims, score models, tokenizers live there
    if problem:
        raise LeakbenchError(problem)
    for sub in (RECORDS, PICTURES):  # else the first save fails, its cell's work lost
        if os.path.lexists(out_dir / sub) and not (out_dir / sub).is_dir():  # a dangling link
            raise LeakbenchError(f"{out_dir / sub}: exists and is not a folder (the run "
                                 "keeps its records and pictures there)")
    summary = RunSummary(suite.name, out_dir, 0)
    t0 = time.perf_counter()
    todo: list[Any] = []
    skipped: list[Any] = []
    folder = iter_plan(suite, out_dir, force, retry_failed)
    for cell, status in folder:
        summary.total += 1
        if status == "done":
            summary.already_done += 1
        elif status.startswith("skipped"):
            skipped.append(cell)
        else:
            todo.append(cell)
    folder.warn_mismatch()
    if todo:  # missing or damaged data: one line before any cell runs or is recorded
        folder.warn_settings(dev, options.cpu_conv, cluster=executor_options.address is not None)
        try:
            preflight_cells(todo, ("train", "test") if suite.utility else ("train",))
        except DataError as e:
            raise DataError(f"{suite.source or suite.name}: {e}") from None
        if any(scored_with_lpips(c) for c in todo):
            preflight_perceptual(suite.perceptual)
        problem = next(filter(None, (writable_problem(out_dir / sub)
                                     for sub in (RECORDS, PICTURES))), None)
        if problem:  # else the first cells' work is lost at their first save
            raise LeakbenchError(problem)
        prepare_attacks(todo, progress)  # a learned prior: off every cell's clock
    problem = blocked_cell_file(out_dir, [c.cell_id for c in (*todo, *skipped)])
    if problem:  # else the run ends at that cell's save, its batch-mates' work lost
        raise LeakbenchError(problem)
    newer = [c.cell_id for c in (*todo, *skipped) if c.cell_id in folder.newer]
    if newer:  # left in place by the plan: this run would write over them
        raise LeakbenchError(f"{out_dir / RECORDS}: {len(newer)} record(s) of cells to run "
                             f"were {NEWER} (e.g. {newer[0]}.json): upgrade leakbench, or run "
                             "into another --out")
    for cell in skipped:
        _write(out_dir, failure_outcome(cell, "skipped", cell.skip_reason or "", options, 0.0, dev),
               summary)
    name, jobs, threads = parallel
    bar = None
    runner = make_executor(name, dev, suite.timeout, jobs,
                           with_resources(executor_options, suite.resources), threads)
    if hasattr(runner, "on_start"):
        runner.on_start = lock.add_worker  # a later run waits for these if this one is killed
    try:
        if todo and hasattr(runner, "connect"):  # a cluster: its size is known once joined
            runner.connect()
        bar = _progress(len(todo), suite.name, progress)  # after: a refusal is one line alone
        tasks = group_trials(todo, trials)
        if name != "ray":  # the workers this run starts: fewer than --jobs for fewer tasks
            warn_oversubscribed(jobs, threads, usable_cores(), len(tasks))
        written: set[str] = set()
        for _, outcome in runner.run(tasks, options):
            stamp_parallelism(outcome, runner)
            _write(out_dir, outcome, summary)
            written.add(outcome.record.cell_id)
            failures = sum(summary.counts[s] for s in FAILURE_STATUSES)
            bar.set_postfix(failed=failures, diverged=summary.counts["diverged"], refresh=False)
            bar.update(1)
        lost = [c for c in todo if c.cell_id not in written]
        if lost:  # an executor that returned without some cells: they had left no record,
            # and the run had said all was done
            warn(f"run: the {name} executor gave no outcome for {len(lost)} cell(s) (e.g. "
                 f"{lost[0].cell_id}); each is recorded as an error that a resume runs again")
        for cell in lost:  # no measurement: out of the tables, and run again by a resume
            outcome = failure_outcome(cell, "error", f"{NEVER_BEGAN}no outcome came back from "
                                      f"the {name} executor", options, 0.0, dev)
            stamp_parallelism(outcome, runner)
            _write(out_dir, outcome, summary)
    finally:
        if bar is not None:
            bar.close()
        if hasattr(runner, "close"):  # a cluster it started, even if planning failed
            runner.close()
    summary.seconds = time.perf_counter() - t0
    if todo:
        summary.parallelism = _describe(runner)
    return summary


def stamp_parallelism(outcome: Outcome, runner: Any) -> None:
    """The record's provenance says under what parallelism its cell was timed: ``workers``
    (cells run at once) beside ``torch_threads`` (threads per worker). A failure outcome the
    executor made in this process gets its workers' thread count, not this process's. An
    executor that does not say how many cells it runs at once (a plugin without ``workers``)
    gets ``None``: not known, rather than ``--jobs``'s guess."""
    prov = outcome.record.provenance
    prov["workers"] = getattr(runner, "workers", None) or None  # 0 (no room said): unknown
    threads = getattr(runner, "threads", None)
    if threads is not None and outcome.record.status in FAILURE_STATUSES:
        prov["torch_threads"] = threads


def _describe(runner: Any) -> str:
    workers = getattr(runner, "workers", None) or None
    threads = getattr(runner, "threads", None)
    each = f" × {threads} thread{'s' if threads != 1 else ''}" if threads else ""
    if workers is None:  # a plugin executor that does not say
        return f"{type(runner).__name__}{each}"
    return f"{workers} worker{'s' if workers != 1 else ''}{each}"


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
    """The run's progress bar; none with no cell to run (it drew "0cell [00:00, ?cell/s]"
    twice above "nothing to run")."""
    return tqdm(total=total, desc=name, unit="cell", disable=not enabled or total == 0,
                dynamic_ncols=True)
