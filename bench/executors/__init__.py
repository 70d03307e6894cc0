"""Executors: where cells run. ``inline`` (this process) and ``process`` (worker processes);
each takes cells and yields outcomes, and none writes the store."""

from bench.executors import inline, process  # noqa: F401  (registers them)
from bench.executors.base import EXECUTORS, Executor, failure_outcome, make_executor

__all__ = ["EXECUTORS", "Executor", "failure_outcome", "make_executor"]
