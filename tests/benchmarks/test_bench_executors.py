"""Benchmark: wall time per cell of the process and Ray executors on the same tiny cells.

Tiny cells (DLG, 2 steps, LeNet on a 16-pixel photo: a fraction of a second of work each) run
with two workers either way: ``--jobs 2`` for the process executor (fresh worker processes each
run, as ``leakbench run`` starts them), a local two-CPU Ray cluster for the Ray executor (started
once, outside the timer: its start-up is ``extra_info["ray_start_seconds"]``; one warm-up round
starts its workers). Each round is a whole run into a fresh folder, records written. The timed
run has ``CELLS`` cells; runs of ``FEW`` cells too give the split of a run's wall time into a
fixed part (``fixed_seconds``: workers, imports) and a part per cell (``seconds_per_cell``, the
slope). ``overhead_per_cell`` is what a cell costs beyond its own work: the timed run's median
wall time per cell, less the mean of its records' setup, attack and score seconds shared by the
two workers (fixed costs included, spread over ``CELLS``).

Run with ``pytest tests/benchmarks/test_bench_executors.py --benchmark-only``.
"""

from __future__ import annotations

import itertools
import os
import statistics
import time

import pytest

from bench.runner import run_suite
from bench.store import load_records
from helpers import ROOT, make_suite

CELLS = 16
FEW = 4
ROUNDS = 3


@pytest.fixture(scope="module")
def ray_start() -> float:
    ray = pytest.importorskip("ray")
    t0 = time.perf_counter()
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    seconds = time.perf_counter() - t0
    yield seconds
    ray.shutdown()


@pytest.mark.parametrize("executor", ["process", "ray"])
def test_bench_executor_per_cell(benchmark, executor, ray_start, tmp_path):
    folders = (tmp_path / str(i) for i in itertools.count())
    summaries: list = []

    def run(cells: int) -> float:
        t0 = time.perf_counter()
        summaries.append(run_suite(make_suite(seeds=cells, attacks=[{"dlg": {"steps": 2}}]),
                                   next(folders), jobs=2, device="cpu", progress=False,
                                   executor=executor))
        assert summaries[-1].counts["ok"] == cells
        return time.perf_counter() - t0

    benchmark.pedantic(run, args=(CELLS,), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    few = statistics.median(run(FEW) for _ in range(ROUNDS))
    many = benchmark.stats.stats.median
    per_cell = (many - few) / (CELLS - FEW)
    work = statistics.mean(sum(r["timing"][k] for k in ("setup_seconds", "attack_seconds",
                                                        "score_seconds"))
                           for s in summaries for r in load_records(s.out_dir))
    benchmark.extra_info.update({
        "cells": CELLS, "median_seconds_few": few, "few": FEW,
        "seconds_per_cell": per_cell, "fixed_seconds": many - CELLS * per_cell,
        "work_seconds_per_cell": work, "overhead_per_cell": many / CELLS - work / 2,
        "ray_start_seconds": ray_start,
    })
