"""The floors of ``test_bench_trials`` compiled (issue #12): ``torch.compile`` (inductor,
static shapes) of the same K-trial objective and gradient written with ``torch.func``, so
that the double backward's many small elementwise passes (sigmoid, ReLU, BatchNorm, pooling,
the distance) are fused into few kernels.

It asks whether kernel fusion brings K trials in one pass within the issue's targets (K = 8
within 2× of K = 1, K = 32 within 6×): ``extra_info`` holds the pass of K = 1, 8 and 32 (the
best of 2 after the compiling call), each ratio to K = 1, and each compile's seconds. The
benchmarked pass is K = 32. Every K compiles anew (on a 2-core Xeon some 10 s for LeNet and
45-60 s for the ConvNet, 2-4 s and 20-23 s once inductor's on-disk cache holds them), so this
runs apart from the README's scaling command:
``pytest tests/benchmarks/test_bench_compiled_floor.py --benchmark-only``. Skipped without a
C++ compiler (inductor's CPU backend needs one).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import pytest
import torch

from bench.cores import usable_cores
from floors import FLOORS, compiled


def _compile(floor) -> tuple[Callable[[], object], float]:
    """The floor's compiled gradient and the seconds of its first, compiling call."""
    torch._dynamo.reset()  # a fresh compile: past shapes would count towards its recompile cap
    gradient = compiled(floor)
    t0 = time.perf_counter()
    gradient()
    return gradient, time.perf_counter() - t0


def _passes(gradient: Callable[[], object], evals: int, rounds: int = 2) -> float:
    """The best of ``rounds`` passes of ``evals`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(evals):
            gradient()
        best = min(best, time.perf_counter() - t0)
    return best


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(FLOORS))
def test_bench_trials_compiled_floor(benchmark, name, threads):
    if not shutil.which(os.environ.get("CXX", "c++")):
        pytest.skip("inductor's CPU backend needs a C++ compiler")
    if usable_cores() < threads:
        pytest.skip(f"{threads} threads need {threads} usable cores")
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    floor, evals = FLOORS[name]
    info: dict = {"threads": threads}
    for k in (1, 8):
        gradient, info[f"compile_seconds_k{k}"] = _compile(floor(k))
        info[f"k{k}_seconds"] = _passes(gradient, evals)
    gradient, info["compile_seconds_k32"] = _compile(floor(32))
    benchmark.pedantic(lambda: _passes(gradient, evals, 1), rounds=2, iterations=1)
    info["k32_seconds"] = benchmark.stats.stats.min
    info.update({f"ratio_k{k}_to_k1": info[f"k{k}_seconds"] / info["k1_seconds"]
                 for k in (8, 32)})
    benchmark.extra_info.update(info)
