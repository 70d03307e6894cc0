"""Benchmark: wall time of ``leakbench run FILE --dry-run`` in a fresh interpreter, for the worst
suite files under 1 MB (tests/suite_files.py): one refused after parsing up to a limit (45 000
attack entries, 0.98 MB: refused at the 20 000th value) and the worst within the limits (a grid
of 10 000 attacks: imports, validation and the plan of 10 000 cells, all expanded).

The target (issue #14): any file under 1 MB is loaded or refused within 5 s on the 2-core
machine. A refusal comes before torch is imported (about 0.1 s); a load pays the imports (about
4 s for any suite, even one cell, on the shared machine) plus its own validation and plan
(about 0.3 s at worst).

``test_bench_cell_expansion``: cells per second of the lazy expansion (each cell with its id)
of a 20 000-cell grid, in ``extra_info``.

Run with ``pytest tests/benchmarks/test_bench_suite_load.py --benchmark-only``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from suite_files import WORST_ACCEPTED, WORST_REJECTED, accepted, rejected

from helpers import ROOT

ROUNDS = 3


@pytest.mark.parametrize("case", ["rejected", "accepted"])
def test_bench_cli_load_of_the_worst_file(benchmark, case: str, tmp_path: Path) -> None:
    if case == "rejected":
        data, expected = rejected()[WORST_REJECTED][0], 2
    else:
        data, expected = accepted()[WORST_ACCEPTED].encode(), 0
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    cmd = [sys.executable, "-m", "bench.cli", "run", str(path), "--dry-run", "--out",
           str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def run() -> None:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert out.returncode == expected, out.stderr

    benchmark.extra_info["bytes"] = len(data)
    benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)


def test_bench_cell_expansion(benchmark) -> None:
    """Cells per second of ``iter_cells`` over a 20 000-cell grid, each with its id (the lazy
    expansion of tests/test_bad_input.py, untraced)."""
    from bench.suite import iter_cells, parse_suite
    from helpers import THOUSAND_PER_SEED

    suite = parse_suite({**THOUSAND_PER_SEED, "seeds": 20})

    def expand() -> int:
        return sum(1 for cell in iter_cells(suite) if cell.cell_id)

    assert benchmark.pedantic(expand, rounds=ROUNDS, iterations=1) == 20_000
    benchmark.extra_info["cells_per_second"] = 20_000 / benchmark.stats.stats.min
