"""Executors: where cells run. ``inline`` (this process), ``process`` (worker processes) and
``ray`` (a Ray cluster; Ray is imported only when that executor is made); each takes cells and
yields outcomes, and none writes the store."""

from bench.executors import inline, process, ray  # noqa: F401  (registers them)
from bench.executors.base import (
    EXECUTORS,
    Executor,
    ExecutorOptions,
    failure_outcome,
    make_executor,
)

__all__ = ["EXECUTORS", "Executor", "ExecutorOptions", "failure_outcome", "make_executor"]
