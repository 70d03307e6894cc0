"""A suite's schema: its top-level keys declared with their help, the settings' parameters
(validated like a component's), and the validated :class:`Suite` itself."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.identity import Spec
from bench.metrics import SuccessRule
from bench.registry import LeakbenchError, Param

LPIPS_NETS = ("alex", "vgg", "squeeze")
"""The LPIPS backbones (torchmetrics' ``net_type``)."""

SUITE_KEYS = {
    "name": "suite name (defaults to the file name)",
    "description": "one line on what the suite shows",
    "seed": "base seed every cell's seeds derive from",
    "seeds": "number of repetitions (seed indices 0..n-1) or a list of indices",
    "batch_size": "an integer or a list of integers",
    "grant": ("capabilities the threat model allows attacks to be given: labels, bn_stats, "
              "public_data"),
    "client": "a client spec or a list of them: mode, local_epochs, local_batch_size, lr, bn_mode",
    "victim": "model states: init (random), trained:N (N SGD steps on the train split)",
    "datasets": "registered dataset names with optional parameter grids",
    "archs": "registered arch names with optional parameter grids",
    "defenses": "registered defense names (or chains) with optional parameter grids",
    "attacks": "registered attack names with optional parameter grids",
    "exclude": "rules of axis: name(s); a matching cell is left out",
    "timeout": "seconds a cell may run before it is recorded as timed out",
    "success_psnr": "a cell succeeds when its mean PSNR reaches this many dB (shorthand)",
    "success": "when a cell succeeds: {metric: NAME, at_least: X} (or at_most for a "
               "lower-is-better metric)",
    "budget": "caps for every attack: max_iterations, max_grad_evals",
    "utility": "utility track: steps, batch_size, lr, eval_size (train with defended updates)",
    "perceptual": "perceptual metrics: lpips (on/off), lpips_net, lpips_weights (a local path)",
    "resources": "what one cell's task declares on a cluster (--executor ray): cpus_per_task, "
                 "gpus_per_task (a fraction packs cells on one GPU)",
}

CLIENT_PARAMS = (
    Param("mode", str, "fedsgd", choices=("fedsgd", "fedavg")),
    Param("local_epochs", int, 1, low=1, high=1000),
    Param("local_batch_size", int, 0, low=0, high=100_000, help="0: the whole batch per step"),
    Param("lr", float, 0.1, low=0.0, high=1000.0, help="fedavg's local step size"),
    Param("bn_mode", str, "train", choices=("train", "eval")),
)
BUDGET_PARAMS = (
    Param("max_iterations", int, None, low=1, nullable=True),
    Param("max_grad_evals", int, None, low=1, nullable=True),
)
PERCEPTUAL_PARAMS = (
    Param("lpips", bool, True, help="score LPIPS when its weights are found locally"),
    Param("lpips_net", str, "alex", choices=LPIPS_NETS),  # a record's metrics name its own
    Param("lpips_weights", str, None, nullable=True, path=True, help="backbone weights file"),
)
EXCLUDE_AXES = ("attack", "defense", "arch", "dataset", "batch_size", "mode", "bn_mode", "victim",
                "seed")
RAY_RESOURCE_UNIT = 1e-4  # Ray refuses a finer share (and overflows on a huge one)
MAX_TASK_CPUS = MAX_TASK_GPUS = 1000.0
MAX_TASK_RETRIES = 1000
RESOURCE_PARAMS = (
    Param("cpus_per_task", float, None, low=RAY_RESOURCE_UNIT, high=MAX_TASK_CPUS, nullable=True,
          help="CPUs per cell's task (more than 0)"),
    Param("gpus_per_task", float, None, low=0.0, high=MAX_TASK_GPUS, nullable=True,
          help="GPUs per cell's task: 0.25 runs four cells on one GPU"),
)


def resource_problem(name: str, value: float) -> str | None:
    """Why ``value`` is no share of ``name`` (cpus_per_task: more than 0; gpus_per_task: 0 or
    more) a Ray task can declare, or None: finite, within 1000 and, where not 0, at least
    Ray's unit of 0.0001."""
    cpus = name == "cpus_per_task"
    least, most = ("more than 0", MAX_TASK_CPUS) if cpus else ("0 or more", MAX_TASK_GPUS)
    if not (math.isfinite(value) and value <= most and (
            value >= RAY_RESOURCE_UNIT or (value == 0 and not cpus))):
        return (f"expected {least}, at most {most:g} and at least Ray's unit "
                f"{RAY_RESOURCE_UNIT:g} (finite numbers), got {value!r}")
    return None
SUCCESS_PARAMS = (
    Param("metric", str, "psnr", help="a registered per-item metric"),
    Param("at_least", float, None, nullable=True, help="bound of a higher-is-better metric"),
    Param("at_most", float, None, nullable=True, help="bound of a lower-is-better metric"),
)


UTILITY_PARAMS = (
    Param("steps", int, 100, low=1, high=1_000_000, help="federated SGD steps"),
    Param("batch_size", int, 32, low=1, high=100_000, help="client batch per step"),
    Param("lr", float, 0.05, low=0.0, help="server learning rate on the aggregated update"),
    Param("eval_size", int, 1000, low=1, high=10_000_000,
          help="test samples evaluated (images or sequences), capped at the test split"),
)


class SuiteError(LeakbenchError):
    """A suite that does not validate: one line naming the key."""


@dataclass
class Suite:
    name: str
    description: str
    base_seed: int
    seeds: Sequence[int]  # a range for ``seeds: N``: lazy
    batch_sizes: list[int]
    granted: frozenset[str]
    clients: list[dict[str, Any]]
    victims: list[str]
    datasets: list[Spec]
    archs: list[Spec]
    defenses: list[tuple[Spec, ...]]
    attacks: list[Spec]
    exclude: list[dict[str, list[Any]]] = field(default_factory=list)
    timeout: float = 600.0
    success: SuccessRule = field(default_factory=SuccessRule)
    budget: dict[str, Any] = field(default_factory=dict)
    utility: dict[str, Any] | None = None
    perceptual: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # a cluster task's, per cell
    source: str = ""
    warnings: list[str] = field(default_factory=list)  # excludes/grants that do nothing
