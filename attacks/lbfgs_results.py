"""A batched L-BFGS run's per-trial records: what it returns (accounting, stop, snapshots)
and the state it keeps for each trial while it runs.

:func:`attacks.batched_lbfgs.run_batched_lbfgs` fills these; :mod:`attacks.lbfgs_trials`
turns each returned trial into a cell's reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from attacks.strong_wolfe import LineSearch, Point

START = 0  # a trial's first phase: its point is evaluated, then a step begins


@dataclass
class Snapshot:
    """One trial's variables (detached, on the CPU) right after its ``evals``-th evaluation."""

    evals: int
    seconds: float  # the trial's clock (:class:`TrialResult` ``seconds``) at that point
    loss: float  # the objective at these variables
    variables: list[torch.Tensor]


@dataclass
class TrialResult:
    """One trial's accounting. ``iterations`` counts outer steps begun; ``final_loss`` is
    the loss at the trial's last point (fixed steps: the last point it evaluated, as a step
    that ends on ``max_iter`` makes one last move that is not evaluated, as in torch, unless
    the point it returns was scored after the pass)."""

    iterations: int = 0
    inner_iterations: int = 0
    grad_evals: int = 0
    loss_trace: list[float] = field(default_factory=list)
    final_loss: float = float("inf")
    diverged: bool = False
    converged: bool = False
    converged_at: tuple[int, int] | None = None  # (grad_evals, step) when it converged
    converged_seconds: float | None = None  # its clock (``seconds``) when it converged
    seconds: float = 0.0  # its clock: each evaluation's time split among the trials in it
    stop_reason: str = ""  # steps | max_grad_evals | tolerance_grad | tolerance_change |
    # zero_loss | patience | diverged
    snapshots: list[Snapshot] = field(default_factory=list)
    # the evaluation that scored its returned point after the pass (fixed-step restarts:
    # attacks.lbfgs_trials.scores_returned_points), outside its clock and round count
    scoring_evals: int = 0
    scoring_seconds: float = 0.0


@dataclass
class BatchedResult:
    trials: list[TrialResult]
    rounds: int = 0  # batched objective evaluations
    seconds: float = 0.0
    round_shares: list[float] = field(default_factory=list)  # each one's time per trial in it


@dataclass
class TrialState:
    """One trial's optimiser state while a run goes on (its L-BFGS history lives in
    :class:`attacks.lbfgs_compact.CurvatureHistory`)."""

    phase: int = START
    total_iter: int = 0  # inner iterations over the whole run (the first one is special)
    n_iter: int = 0  # inner iterations in the current step
    step_max_iter: int = 0
    step_evals: int = 0
    loss: float = float("nan")  # at the trial's current point
    prev_loss: float = float("nan")
    dt_max: float = float("inf")
    best: float = float("inf")
    bests: list[float] = field(default_factory=list)
    snap_next: int = 0
    search: LineSearch | None = None  # the running strong-Wolfe search
    probe: float = 0.0  # the step length it is evaluating
    lowest: Point | None = None  # the lowest point it has seen (where a cap cuts it)
