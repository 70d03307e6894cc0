"""Inverting Gradients' signed Adam over K independent trials, evaluated together.

Geiping et al. 2020 optimise the dummy image with Adam on the sign of the objective's
gradient, a step-decay learning rate and a projection into the pixel box. Every one of those
rules is element-wise, so K trials stacked along a leading dimension advance exactly as they
would one by one: the trials of a batch are independent (tested). A trial whose loss or
gradient becomes non-finite is frozen as diverged; a trial whose objective has stopped
improving (:class:`Plateau`) is frozen as converged; the others go on (with ``rows_losses``,
evaluating only their own rows, so the pass costs less as trials stop). Each trial keeps its
own clock, each iteration's wall time split evenly among the trials it moved, and its
convergence and snapshots are timed by it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from attacks.gradient_matching import step_decay_lr
from attacks.stopping import Plateau

ADAM_MAX_LR = float(torch.finfo(torch.float32).max)
"""The largest Adam step size an attack declares: the step is applied to float32 tensors as
a float32 scalar, and a larger one failed every cell ("value cannot be converted to type
float without overflow")."""

TrialLosses = Callable[[torch.Tensor], torch.Tensor]  # x [K, ...] → losses [K]
RowsLosses = Callable[[torch.Tensor, list[int]], torch.Tensor]  # x's rows [R, ...] → [R]


@dataclass
class TrialOutcome:
    """One trial's cost and result."""

    iterations: int = 0
    grad_evals: int = 0
    loss_trace: list[float] = field(default_factory=list)
    bests: list[float] = field(default_factory=list)  # the running best loss, per step
    diverged: bool = False
    final_loss: float = math.inf
    converged_at: dict[str, float] | None = None  # {"iterations", "grad_evals", "seconds"}
    snapshots: list[tuple[int, float, torch.Tensor]] = field(default_factory=list)
    seconds: float = 0.0  # its clock: each iteration's time split among the trials it moved


@dataclass
class TrialsResult:
    images: torch.Tensor  # [K, ...], the final dummies
    trials: list[TrialOutcome]
    seconds: float = 0.0
    round_shares: list[float] = field(default_factory=list)  # each iteration's time per trial


def run_signed_adam_trials(start: torch.Tensor, losses: TrialLosses, iterations: int,
                           lr: float = 0.1, signed: bool = True, lr_decay: bool = True,
                           box: tuple[torch.Tensor, torch.Tensor] | None = None,
                           score: TrialLosses | None = None, trace_every: int = 10,
                           plateau: Plateau | None = None,
                           snapshot_at: Sequence[int] = (),
                           rows_losses: RowsLosses | None = None) -> TrialsResult:
    """Minimise every trial's ``losses(x)[k]`` over its slice ``x[k]`` of ``start`` [K, ...].

    Each iteration evaluates all live trials in one pass (one gradient evaluation each),
    replaces the gradient by its sign when ``signed``, takes an Adam step at the step-decay
    rate and projects into ``box``. At the end each live trial is scored by ``score``
    (default ``losses``), one more evaluation. ``snapshot_at`` lists iteration counts at
    which each live trial's estimate is kept (on the CPU) with its evaluations and seconds,
    for quality-versus-compute curves scored outside the attack. ``rows_losses(rows of x,
    rows)``, when given, is ``losses`` over the listed trials only: once a trial has
    stopped, an iteration evaluates only the trials still running.
    """
    plateau = plateau or Plateau()
    k = start.shape[0]
    x = start.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    out = [TrialOutcome() for _ in range(k)]
    live = torch.ones(k, dtype=torch.bool, device=x.device)  # neither diverged nor converged
    snaps = sorted(set(int(s) for s in snapshot_at if 0 < s <= iterations))
    t0 = mark = time.perf_counter()
    shares: list[float] = []
    for it in range(iterations):
        if not bool(live.any()):
            break
        for pg in opt.param_groups:
            pg["lr"] = step_decay_lr(lr, it, iterations, lr_decay)
        stepping = live.tolist()  # the trials this iteration moves (snapshots: only these)
        moving = [j for j in range(k) if stepping[j]]
        value, g = _evaluate(x, losses, rows_losses, moving)
        finite = torch.isfinite(value.detach()) & torch.isfinite(g.reshape(k, -1)).all(dim=1)
        vals, finite_list = value.detach().cpu().tolist(), finite.tolist()
        for j in range(k):
            if not stepping[j]:
                continue
            t = out[j]
            t.iterations += 1
            t.grad_evals += 1
            if not finite_list[j]:
                t.diverged = True
                continue
            t.bests.append(min(vals[j], t.bests[-1]) if t.bests else vals[j])
            if it % trace_every == 0 or it == iterations - 1:
                t.loss_trace.append(vals[j])
        live &= finite
        mask = live.view(k, *([1] * (x.dim() - 1)))
        g = torch.where(mask, g.sign() if signed else g, torch.zeros_like(g))
        before = x.detach().clone()
        x.grad = g
        opt.step()
        with torch.no_grad():
            if box is not None:
                x.copy_(torch.clamp(x, box[0], box[1]))
            x.copy_(torch.where(mask, x, before))  # frozen trials do not move
        now = time.perf_counter()
        shares.append((now - mark) / len(moving))  # each moved trial's part
        for j in moving:
            out[j].seconds += shares[-1]
        mark = now
        for j in range(k):
            if stepping[j] and finite_list[j] and plateau.stalled(out[j].bests):
                t = out[j]
                t.converged_at = {"iterations": t.iterations, "grad_evals": t.grad_evals,
                                  "seconds": t.seconds}
                live[j] = False
        if snaps and it + 1 == snaps[0]:
            snaps.pop(0)
            kept = x.detach().cpu()
            for j in range(k):  # a trial that has stopped keeps no further snapshots
                if stepping[j] and not out[j].diverged:
                    out[j].snapshots.append((out[j].grad_evals, out[j].seconds,
                                             kept[j].clone()))
    scorer = score or losses
    ok = [j for j in range(k) if not out[j].diverged and bool(torch.isfinite(x[j]).all())]
    if ok:
        with torch.enable_grad():
            final = scorer(x.detach()).detach().cpu().tolist()
        for j in ok:
            out[j].grad_evals += 1
            out[j].final_loss = final[j] if math.isfinite(final[j]) else math.inf
    return TrialsResult(x.detach(), out, time.perf_counter() - t0, shares)


def _evaluate(x: torch.Tensor, losses: TrialLosses, rows_losses: RowsLosses | None,
              running: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every trial's loss [K] and gradient [K, ...]: all rows through ``losses``, or, once
    some trials have stopped, the ``running`` rows through ``rows_losses`` (the others' loss
    NaN and gradient 0: they are frozen, nobody reads them)."""
    if rows_losses is None or len(running) == x.shape[0]:
        value = losses(x)
        (g,) = torch.autograd.grad(value.sum(), x)
        return value, g
    ix = torch.tensor(running, device=x.device)
    rows = x.detach().index_select(0, ix).requires_grad_(True)
    part = rows_losses(rows, running)
    (g_rows,) = torch.autograd.grad(part.sum(), rows)
    value = part.detach().new_full((x.shape[0],), math.nan).index_copy(0, ix, part.detach())
    return value, torch.zeros_like(x).index_copy(0, ix, g_rows)
