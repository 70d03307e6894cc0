"""Benchmark: one DLG cell (LeNet, a 32×32 bundled photo, 300 L-BFGS steps), attack alone.

Run with ``tox -e bench`` or ``pytest tests/benchmarks --benchmark-only``.
"""

from __future__ import annotations

from bench.suite import attack_cells
from helpers import make_suite, run_record


def test_bench_dlg_cell(benchmark):
    suite = make_suite(datasets=[{"photos": {"size": 32}}], attacks=[{"dlg": {"steps": 300}}])
    cell = attack_cells(suite)[0]
    records = []

    def once():
        records.append(run_record(cell, 30.0))

    benchmark.pedantic(once, rounds=3, iterations=1)
    r = records[-1]
    assert r["status"] == "ok"
    benchmark.extra_info.update({
        "psnr": r["metrics"]["psnr"], "grad_evals": r["grad_evals"],
        "attack_seconds": r["timing"]["attack_seconds"],
        "seconds_per_grad_eval": r["timing"]["attack_seconds"] / r["grad_evals"],
        "peak_memory_bytes": r["peak_memory_bytes"],
    })
