"""What a batched L-BFGS run returns: per trial, its accounting, stop and snapshots.

:func:`attacks.batched_lbfgs.run_batched_lbfgs` fills these; :mod:`attacks.lbfgs_trials`
turns each trial into a cell's reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Snapshot:
    """One trial's variables (detached, on the CPU) right after its ``evals``-th evaluation."""

    evals: int
    seconds: float  # since the run began
    loss: float  # the objective at these variables
    variables: list[torch.Tensor]


@dataclass
class TrialResult:
    """One trial's accounting. ``iterations`` counts outer steps begun; ``final_loss`` is
    the loss at the trial's last point (fixed steps: the last point it evaluated, as a step
    that ends on ``max_iter`` makes one last move that is not evaluated, as in torch)."""

    iterations: int = 0
    inner_iterations: int = 0
    grad_evals: int = 0
    loss_trace: list[float] = field(default_factory=list)
    final_loss: float = float("inf")
    diverged: bool = False
    converged: bool = False
    converged_at: tuple[int, int] | None = None  # (grad_evals, step) when it converged
    converged_seconds: float | None = None  # since the run began, when it converged
    stop_reason: str = ""  # steps | max_grad_evals | tolerance_grad | tolerance_change |
    # zero_loss | patience | diverged
    snapshots: list[Snapshot] = field(default_factory=list)


@dataclass
class BatchedResult:
    trials: list[TrialResult]
    rounds: int = 0  # batched objective evaluations
    seconds: float = 0.0
