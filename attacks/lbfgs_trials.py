"""DLG and iDLG over batched trials: the shared L-BFGS settings and the per-cell results.

Both attacks minimise DLG's squared-L2 gradient distance with L-BFGS (Zhu et al. 2019: 300
steps, learning rate 1). Their cells that differ only by seed run as trials of one pass of
:func:`attacks.batched_lbfgs.run_batched_lbfgs`, each with its own curvature history and
stopping; a single cell is a batch of one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from attacks.batched_lbfgs import run_batched_lbfgs
from attacks.clocks import RoundClock
from attacks.lbfgs_results import BatchedResult, TrialResult
from bench.contracts import Observation, Reconstruction
from bench.registry import Param

LBFGS_PARAMS = (
    Param("steps", int, 300, low=1, high=100_000, help="L-BFGS steps (up to 20 evals each)"),
    Param("lr", float, 1.0, low=0.0, help="L-BFGS learning rate"),
    Param("max_eval_per_step", int, 20, low=1, high=1000, help="torch's LBFGS max_iter"),
    Param("history_size", int, 100, low=1, high=10_000,
          help="curvature pairs kept (torch's default, 100; on DLG's LeNet setting with a "
               "strong-Wolfe search 1 000 reached 40 dB in 780 evaluations, 100 in 1 600: "
               "README, Benchmarks). Memory per trial: 2·n floats per pair plus 2·pairs² "
               "float64"),
    Param("line_search", str, "none", choices=("none", "strong_wolfe"), identity="non-default",
          help="none: a fixed step lr per iteration (the DLG code's loop); strong_wolfe: "
               "each trial searches for a strong-Wolfe step (torch's line_search_fn)"),
    Param("patience", int, 0, low=0, high=100_000, identity="non-default",
          help="stop a trial whose best loss gained < min_rel_improvement over this many steps "
               "(0: only L-BFGS's own tolerances stop it before the budget)"),
    Param("min_rel_improvement", float, 1e-4, low=0.0, high=1.0, identity="non-default",
          help="the relative gain that counts as progress for patience"),
    Param("restarts", int, 1, low=1, high=1000, identity="non-default",
          help="independent dummy initialisations, run as trials of the same pass; the cell "
               "keeps the one with the lowest loss at the point it returns"),
    Param("snapshots", int, 4, low=0, high=64, identity=False,
          help="estimates kept at 1/2^k of the evaluation budget, for the quality-versus-"
               "compute curve (scored outside the attack)"),
)
"""The L-BFGS settings DLG and iDLG share."""


def line_search_fn(line_search: str) -> str | None:
    """torch's ``line_search_fn`` for the ``line_search`` parameter."""
    return None if line_search == "none" else line_search


def snapshot_points(budget: int, count: int) -> list[int]:
    """Evaluation counts budget/2, budget/4, … (``count`` of them), ascending."""
    return sorted({budget >> k for k in range(1, count + 1)} - {0})


def planned_restarts(restarts: int, obs: Observation, scoring: bool = False) -> int:
    """The restarts the suite's caps afford: each gets an equal share of ``max_grad_evals``
    and ``max_iterations``, and fewer run when a share would be below one; with ``scoring``
    (several restarts spend one more evaluation each to score the point they return,
    :func:`scores_returned_points`), below two evaluations."""
    least = 1 + int(scoring)  # evaluations a share needs (only several restarts score)
    while restarts > 1 and (
            (obs.max_grad_evals is not None and obs.max_grad_evals // restarts < least)
            or (obs.max_iterations is not None and obs.max_iterations // restarts < 1)):
        restarts -= 1
    return restarts


def scores_returned_points(line_search: str) -> bool:
    """Whether several restarts evaluate each trial once more at the end. With fixed steps a
    step's last move is not evaluated (as in torch and DLG's loop), so the loss a trial last
    evaluated belongs to the point before the one it returns; restarts are ranked on the
    points they return, which costs one evaluation each (from the budget, as Inverting
    Gradients' restarts spend one to score theirs). A strong-Wolfe step ends on its
    evaluated point (a lone trial ranks nothing either way)."""
    return line_search == "none"


def run_trials_lbfgs(attack: object, observations: Sequence[Observation],
                     variables: list[torch.Tensor],
                     objective: Callable[[Sequence[torch.Tensor], list[int] | None],
                                         torch.Tensor],
                     restarts: int = 1) -> BatchedResult:
    """Run the attack's L-BFGS settings over the stacked ``variables`` (trial first); with
    ``restarts`` trials per cell, each gets its share of the suite's caps.
    ``objective(variables, rows)``: the losses of trials ``rows`` (``None``: all), whose
    rows ``variables`` hold; once some trials have stopped, only the others are evaluated."""
    obs0 = observations[0]
    scoring = int(restarts > 1 and scores_returned_points(attack.line_search))
    cap_evals = None if obs0.max_grad_evals is None else obs0.max_grad_evals // restarts - scoring
    cap_iters = None if obs0.max_iterations is None else obs0.max_iterations // restarts
    budget = attack.steps * attack.max_eval_per_step
    if cap_evals is not None:
        budget = min(budget, cap_evals)
    res = run_batched_lbfgs(
        variables, lambda v: objective(v, None), attack.steps, attack.lr, attack.max_eval_per_step,
        history_size=attack.history_size, max_grad_evals=cap_evals,
        line_search_fn=line_search_fn(attack.line_search),
        max_iterations=cap_iters, patience=attack.patience or None,
        min_rel_improvement=attack.min_rel_improvement,
        snapshot_at=snapshot_points(budget, attack.snapshots), rows_objective=objective,
        loss_floor=0.0)  # DLG's and iDLG's squared gradient distance is never below 0
    if scoring:
        _score_returned_points(res, variables, objective)
    return res


def _score_returned_points(res: BatchedResult, variables: Sequence[torch.Tensor],
                           objective: Callable[[Sequence[torch.Tensor], list[int] | None],
                                               torch.Tensor]) -> None:
    """Each live trial's ``final_loss`` becomes the loss at the point it returns, from one
    more batched evaluation (counted in ``scoring_evals``, its time in ``scoring_seconds``);
    a trial whose returned point has no finite loss is diverged."""
    live = [k for k, t in enumerate(res.trials) if not t.diverged]
    if not live:
        return
    t0 = time.perf_counter()
    every = len(live) == len(res.trials)
    with torch.enable_grad():
        inputs = [v.detach() if every else v.detach()[live] for v in variables]
        losses = objective(inputs, None if every else live).detach().tolist()
    share = (time.perf_counter() - t0) / len(live)
    for k, f in zip(live, losses):
        trial = res.trials[k]
        trial.scoring_evals, trial.scoring_seconds = 1, share
        trial.final_loss = f
        if not math.isfinite(f):  # no longer converged: its stop is the divergence
            trial.diverged, trial.stop_reason = True, "diverged"
            trial.converged, trial.converged_at, trial.converged_seconds = False, None, None


def best_restarts(res: BatchedResult, data: torch.Tensor, labels: list[torch.Tensor | None],
                  cells: int, restarts: int) -> list[Reconstruction]:
    """Per cell (its trials are ``restarts`` consecutive ones), the restart with the lowest
    final loss among those that did not diverge, with the cost of all its restarts.
    ``labels``: each trial's labels to report (None: none to score)."""
    out = []
    for c in range(cells):
        ks = range(c * restarts, (c + 1) * restarts)
        live = [k for k in ks if not res.trials[k].diverged]
        best = min(live, key=lambda k: res.trials[k].final_loss) if live else ks[0]
        recon = trial_reconstruction(res.trials[best], data[best], labels[best])
        if restarts > 1:
            mine = [res.trials[k] for k in ks]
            recon.grad_evals = sum(t.grad_evals + t.scoring_evals for t in mine)
            recon.iterations = sum(t.iterations for t in mine)
            recon.info.update(restarts_run=restarts, best_restart=best - ks[0],
                              restart_losses=[t.final_loss for t in mine],
                              trial_seconds=sum(t.seconds + t.scoring_seconds for t in mine))
            # the schedule's evaluations (the winner's times the restarts, the same for every
            # seed) and the seconds all the cell's restarts had spent by then
            clock, ran = RoundClock(res.round_shares), [t.grad_evals for t in mine]
            recon.info["snapshots"] = [(e * restarts, clock.at(e, ran), x)
                                       for e, _, x in recon.info["snapshots"]]
            if recon.info["converged_at"] is not None:
                stop = recon.info["converged_at"]
                stop["seconds"] = clock.at(stop["grad_evals"], ran)
        out.append(recon)
    return out


def trial_reconstruction(trial: TrialResult, data: torch.Tensor, labels: torch.Tensor | None
                         ) -> Reconstruction:
    """One cell's reconstruction from its trial: the estimate, its cost, how it stopped, and
    its snapshots (the first variable: the dummy batch)."""
    converged = None
    if trial.converged_at is not None:
        evals, step = trial.converged_at
        converged = {"grad_evals": evals, "iterations": step, "reason": trial.stop_reason,
                     "seconds": trial.converged_seconds}
    info = {"final_loss": trial.final_loss, "diverged": trial.diverged,
            "stop_reason": trial.stop_reason, "converged_at": converged,
            "trial_seconds": trial.seconds,  # its clock: the runner divides a pass by them
            "snapshots": [(s.evals, s.seconds, s.variables[0]) for s in trial.snapshots]}
    return Reconstruction(data.detach(), None if labels is None else labels.cpu(),
                          trial.iterations, trial.grad_evals, trial.loss_trace, info)
