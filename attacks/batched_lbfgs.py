"""Batched L-BFGS: K independent trials of DLG/iDLG optimised together (issue #12).

DLG (Zhu, Liu, Han, NeurIPS 2019) and iDLG (Zhao et al. 2020) minimise a gradient-matching
loss with L-BFGS (Nocedal 1980; Liu & Nocedal 1989), and a benchmark cell runs many such
trials (seeds, restarts). Running them one after another leaves the hardware idle between
small kernels; here the K trials share every objective evaluation while each keeps its own
L-BFGS state: curvature history, step size, counters and stopping. A trial's trajectory does
not depend on the other trials: the optimiser's arithmetic is row-wise per trial (row sums,
element-wise ops, per-trial Python scalars; no cross-trial reduction) and each trial's direction
is computed from its own history slices alone, so with an objective whose per-trial losses
depend only on that trial's variables a trial alone and inside a batch follow the same
trajectory (up to BLAS kernels that may round by memory alignment), and a trial that turns
non-finite is frozen without touching the others.

Per trial the algorithm is ``torch.optim.LBFGS`` with ``line_search_fn=None`` (fixed step
``lr``), called once per outer step, the way DLG's loop calls it
(written anew here, not copied): a step evaluates the objective, stops if ``max|g| <=
tolerance_grad``, then makes up to ``max_iter`` inner iterations, the very first one along
``-g`` with step ``lr * min(1, 1/|g|_1)``, later ones along ``-H g`` for the L-BFGS matrix
``H`` of the last ``history_size`` pairs (a pair kept only when ``y.s > 1e-10``; initial
scale ``H0 = y.s / y.y``), computed in the compact form of Byrd, Nocedal and Schnabel (1994)
rather than torch's two-loop recursion: the same matrix in a fixed number of kernel calls
per iteration (the two-loop makes four per pair), so ``history_size`` in the thousands is
affordable; its arithmetic still grows with the history's length times ``n``.
An inner iteration evaluates the objective after its move unless it is the step's last; the
step ends early when ``max_eval`` evaluations are used, ``max|g| <= tolerance_grad``,
``max|d t| <= tolerance_change``, the loss changed by less than ``tolerance_change``, or the
directional derivative ``g.d > -tolerance_change``.

Per-trial stopping: where torch's optimiser would go on evaluating the same point forever, a
trial stops and counts as converged: ``max|g| <= tolerance_grad`` at a step's start, a zero
loss, or ``g.d > -tolerance_change`` (no move; every later step would repeat it). Opt-in
``patience``: with ``best_s`` the lowest loss a trial has evaluated up to the start of outer
step ``s``, it stops at step ``s`` when ``best_{s-patience} - best_s <= min_rel_improvement *
|best_{s-patience}|``. Caps per trial: ``steps`` (and ``max_iterations``) outer steps, and
``max_grad_evals`` evaluations (a step's inner iterations are cut so the cap is never
exceeded). Strong-Wolfe line search is not implemented.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from attacks.lbfgs_compact import compact_direction
from attacks.stopping import Plateau

_START, _INNER, _DONE = 0, 1, 2


@dataclass
class Snapshot:
    """One trial's variables (detached, on the CPU) right after its ``evals``-th evaluation."""

    evals: int
    seconds: float  # since the run began
    loss: float  # the objective at these variables
    variables: list[torch.Tensor]


@dataclass
class TrialResult:
    """One trial's accounting. ``iterations`` counts outer steps begun;
    ``final_loss`` is the loss at the last point the trial evaluated (a step that ends on
    ``max_iter`` makes one last move that is not evaluated, as in torch)."""

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


@dataclass
class _Trial:
    phase: int = _START
    total_iter: int = 0  # inner iterations over the whole run (the first one is special)
    n_iter: int = 0  # inner iterations in the current step
    step_max_iter: int = 0
    step_evals: int = 0
    loss: float = float("nan")
    prev_loss: float = float("nan")
    dt_max: float = float("inf")
    best: float = float("inf")
    bests: list[float] = field(default_factory=list)
    hist_len: int = 0
    head: int = 0  # the slot of the oldest pair (0 until the history ring wraps)
    snap_next: int = 0
    gamma: float = 1.0  # H0 = gamma·I: y.s / y.y of the newest kept pair


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each row's dot product (one kernel, no temporary)."""
    return torch.linalg.vecdot(a, b)


def run_batched_lbfgs(
    variables: Sequence[torch.Tensor],
    objective: Callable[[Sequence[torch.Tensor]], torch.Tensor],
    steps: int,
    lr: float = 1.0,
    max_iter: int = 20,
    max_eval: int | None = None,
    history_size: int = 100,
    tolerance_grad: float = 1e-7,
    tolerance_change: float = 1e-9,
    line_search_fn: str | None = None,
    max_grad_evals: int | None = None,
    max_iterations: int | None = None,
    trace_every: int = 10,
    patience: int | None = None,
    min_rel_improvement: float = 0.0,
    snapshot_at: Sequence[int] | None = None,
) -> BatchedResult:
    """Minimise K independent objectives with one L-BFGS per trial, evaluated together.

    ``variables``: leaf tensors with ``requires_grad``, each of shape ``[K, ...]`` (trial
    first), updated in place. ``objective(variables)`` returns the K per-trial losses, shape
    ``[K]``; trial k's loss must depend only on row k of each variable (no BatchNorm across
    trials, no cross-trial reductions), so that the gradient of ``losses.sum()`` is each
    trial's own gradient. Options follow ``torch.optim.LBFGS`` (``max_iter``: inner
    iterations per outer step; ``max_eval`` defaults to ``max_iter * 5 // 4``) and
    DLG's loop (``steps``, ``max_grad_evals``, ``max_iterations``, ``trace_every``: the
    step-start loss of steps ``0, trace_every, ...`` and ``steps - 1``). ``patience`` /
    ``min_rel_improvement``: the opt-in convergence stop of the module docstring.
    ``snapshot_at``: sorted evaluation counts at which each trial's variables are copied.
    A trial whose loss, gradient or variables turn non-finite is marked diverged and frozen.
    Memory: the curvature history takes ``2 * K * history_size * n`` elements (n: a trial's
    variable count), as K separate torch optimisers would, plus ``2 * K * history_size**2``
    float64 inner products; ``history_size`` is first cut to the pairs the run can make
    (at most ``steps * max_iter`` and ``max_grad_evals``).
    """
    if line_search_fn is not None:
        raise ValueError("only line_search_fn=None (fixed step, as DLG uses) is implemented")
    if not variables or any(not (v.is_leaf and v.requires_grad) for v in variables):
        raise ValueError("variables must be leaf tensors with requires_grad=True")
    k_trials = variables[0].shape[0]
    if any(v.dim() < 1 or v.shape[0] != k_trials for v in variables):
        raise ValueError("every variable needs the same leading trial dimension K")
    if trace_every < 1 or history_size < 1 or max_iter < 1:
        raise ValueError("trace_every, history_size and max_iter must be at least 1")
    if max_eval is None:
        max_eval = max_iter * 5 // 4
    if max_iterations is not None:
        steps = min(steps, max_iterations)
    plateau = Plateau(patience or 0, min_rel_improvement)
    snaps = sorted(snapshot_at or [])
    sizes = [v[0].numel() for v in variables]
    # a pair per inner iteration at most, and an inner iteration per evaluation
    m = max(0, min(history_size, steps * max_iter,
                   max_grad_evals if max_grad_evals is not None else history_size))
    t0 = time.perf_counter()
    with torch.no_grad():
        x = torch.cat([v.detach().reshape(k_trials, -1) for v in variables], 1).clone()
    n = x.shape[1]
    g = torch.zeros_like(x)
    prev_g = torch.zeros_like(x)
    moved = torch.zeros_like(x)  # each trial's last move, t·d: the next pair's s
    keep_above = torch.tensor(1e-10, dtype=x.dtype).item()  # y.s > 1e-10 in x's precision
    pairs = x.new_zeros(k_trials, m, 2, n)  # pairs[k, slot] = (s, y), side by side
    sy = x.new_zeros(k_trials, m, m, dtype=torch.float64)  # sy[k, i, j] = s_i . y_j
    yy = x.new_zeros(k_trials, m, m, dtype=torch.float64)  # yy[k, i, j] = y_i . y_j
    states = [_Trial() for _ in range(k_trials)]
    results = [TrialResult() for _ in range(k_trials)]

    def stop(k: int, reason: str) -> None:
        st, res = states[k], results[k]
        st.phase = _DONE
        res.stop_reason = reason
        if reason not in ("steps", "max_grad_evals", "diverged"):
            res.converged = True
            res.converged_at = (res.grad_evals, res.iterations)
            res.converged_seconds = time.perf_counter() - t0

    def begin_step(k: int) -> None:
        """Start trial k's next outer step, or stop it on a cap (the suite's caps)."""
        st, res = states[k], results[k]
        if res.iterations >= steps:
            return stop(k, "steps")
        st.step_max_iter = max_iter
        if max_grad_evals is not None:
            remaining = max_grad_evals - res.grad_evals
            if remaining <= 0:
                return stop(k, "max_grad_evals")
            st.step_max_iter = min(max_iter, remaining)
        st.phase = _START

    for k in range(k_trials):
        begin_step(k)

    def write_back(rows: torch.Tensor | slice) -> None:
        with torch.no_grad():
            off = 0
            for v, size in zip(variables, sizes):
                v[rows] = x[rows, off:off + size].reshape(-1, *v.shape[1:])
                off += size

    def evaluate() -> tuple[list[float], torch.Tensor]:
        with torch.enable_grad():
            losses = objective(variables)
            if losses.shape != (k_trials,):
                raise ValueError(f"objective must return shape ({k_trials},), "
                                 f"got {tuple(losses.shape)}")
            grads = torch.autograd.grad(losses.sum(), list(variables), allow_unused=True)
        flat = [torch.zeros(k_trials, s, dtype=x.dtype, device=x.device) if gr is None
                else gr.reshape(k_trials, -1) for gr, s in zip(grads, sizes)]
        return losses.detach().tolist(), torch.cat(flat, 1)

    def snapshot(k: int) -> None:
        st, res = states[k], results[k]
        while st.snap_next < len(snaps) and snaps[st.snap_next] <= res.grad_evals:
            if snaps[st.snap_next] == res.grad_evals:
                parts = x[k].detach().split(sizes)
                res.snapshots.append(Snapshot(
                    res.grad_evals, time.perf_counter() - t0, st.loss,
                    [p.reshape(v.shape[1:]).cpu().clone() for p, v in zip(parts, variables)]))
            st.snap_next += 1

    every = list(range(k_trials))

    def index(rows: list[int]) -> torch.Tensor | slice:
        """Rows ``rows`` of a [K, ...] tensor: a slice (views, no gathering) when they are all
        the trials, as they are for a lone trial and for a batch that advances in step."""
        return slice(None) if rows == every else torch.tensor(rows, device=x.device)

    @torch.no_grad()
    def _iterate(rows: list[int]) -> None:
        """One inner L-BFGS iteration (direction, step size, move) for trials ``rows``.

        Per-trial scalars (step size, ``H0``'s scale) live in Python floats, read from the
        float32 tensors that computed them, so the arithmetic is the tensors' own."""
        ix = index(rows)
        gk = g[ix]
        upd = [j for j, k in enumerate(rows) if states[k].total_iter > 0]
        if upd:  # curvature pair from the previous iteration's move
            every_row = len(upd) == len(rows)
            ui = ix if every_row else index([rows[j] for j in upd])
            y = (gk if every_row else gk[upd]) - prev_g[ui]
            s = moved[ui]
            ys_t = _rowdot(y, s)
            ys_scale = torch.stack((ys_t, ys_t / _rowdot(y, y))).tolist()
            for j, (ys, scale) in enumerate(zip(*ys_scale)):
                if not ys > keep_above or m == 0:
                    continue
                kk = rows[upd[j]]
                st = states[kk]
                if st.hist_len < m:
                    slot = st.hist_len
                    st.hist_len += 1
                else:  # full: the oldest pair's slot takes the new one (a ring)
                    slot = st.head
                    st.head = (st.head + 1) % m
                pairs[kk, slot, 0], pairs[kk, slot, 1] = s[j], y[j]
                st.gamma = scale
                # the new pair's products with the kept ones, in one pass over the history:
                # the column s_i . y_new (its row, s_new . y_i, lies below the diagonal in age
                # order and is never read), y_i . y_new, and on the diagonal the very ys that
                # decided to keep the pair
                top = st.hist_len
                prod = (pairs[kk, :top].reshape(2 * top, n) @ y[j]).to(sy.dtype).view(top, 2)
                sy[kk, :top, slot] = prod[:, 0]
                yy[kk, :top, slot] = yy[kk, slot, :top] = prod[:, 1]
                sy[kk, slot, slot] = ys
        first = []
        for j, k in enumerate(rows):
            st = states[k]
            if st.total_iter == 0:
                st.hist_len, st.gamma = 0, 1.0
                first.append(j)
            st.total_iter += 1
            st.n_iter += 1
            results[k].inner_iterations += 1

        def direction(j: int, k: int) -> torch.Tensor:
            st = states[k]
            ln = st.hist_len
            return compact_direction(gk[j], st.gamma, pairs[k, :ln], sy[k, :ln, :ln],
                                     yy[k, :ln, :ln], st.head)

        if len(rows) == 1:
            r = direction(0, rows[0]).unsqueeze(0)
        else:  # one trial at a time: on the CPU, K matrix-vector products beat one batched
            r = torch.stack([direction(j, k) for j, k in enumerate(rows)])  # GEMM per vector
        prev_g[ix] = gk
        steps_t = [lr] * len(rows)
        if first:  # the very first iteration's step: lr * min(1, 1/|g|_1)
            sizes_1 = ((1.0 / gk[first].abs().sum(1)).clamp(max=1.0) * lr).tolist()
            for j, size in zip(first, sizes_1):
                steps_t[j] = size
        tk = steps_t[0] if len(set(steps_t)) == 1 else torch.tensor(
            steps_t, dtype=x.dtype, device=x.device)[:, None]
        step = r * tk
        gtd_dt = torch.stack((_rowdot(gk, r), step.abs().amax(1))).tolist()
        movers = []
        for j, k in enumerate(rows):
            states[k].prev_loss = states[k].loss
            if gtd_dt[0][j] > -tolerance_change:
                stop(k, "tolerance_change")  # no move; every later step would repeat this
            else:
                movers.append(j)
        if not movers:
            return
        if len(movers) == len(rows):
            im = ix
        else:
            im, step = index([rows[j] for j in movers]), step[movers]
        moved[im] = step
        if isinstance(im, slice):
            x.add_(step)
        else:
            x[im] = x[im] + step
        write_back(im)
        for j in movers:
            st = states[rows[j]]
            st.dt_max = gtd_dt[1][j]
            if st.n_iter == st.step_max_iter:
                begin_step(rows[j])  # the step's last move is not evaluated
            else:
                st.phase = _INNER

    rounds = 0
    while any(st.phase != _DONE for st in states):
        losses, grads = evaluate()
        rounds += 1
        with torch.no_grad():  # max|.| is NaN or inf exactly when a row is not finite
            gmax, xmax = torch.stack((grads.abs().amax(1), x.abs().amax(1))).tolist()
        used = [k for k in range(k_trials) if states[k].phase != _DONE]
        iterate: list[int] = []
        for k in used:
            st, res = states[k], results[k]
            res.grad_evals += 1
            f = losses[k]
            if not (math.isfinite(gmax[k]) and math.isfinite(xmax[k]) and math.isfinite(f)):
                res.diverged = True
                stop(k, "diverged")
                continue
            st.loss = res.final_loss = f
            st.best = min(st.best, f)
            snapshot(k)
            if st.phase == _START:
                step = res.iterations
                res.iterations += 1
                if step % trace_every == 0 or step == steps - 1:
                    res.loss_trace.append(f)
                st.step_evals, st.n_iter = 1, 0
                st.bests.append(st.best)
                if gmax[k] <= tolerance_grad:
                    stop(k, "tolerance_grad")
                elif f == 0.0:  # an exact match: L-BFGS can make no further progress
                    stop(k, "zero_loss")
                elif plateau.stalled(st.bests):
                    stop(k, "patience")
                else:
                    iterate.append(k)
            else:
                st.step_evals += 1
                if (st.step_evals >= max_eval or gmax[k] <= tolerance_grad
                        or st.dt_max <= tolerance_change
                        or abs(f - st.prev_loss) < tolerance_change):
                    begin_step(k)
                else:
                    iterate.append(k)
        fresh = [k for k in used if not results[k].diverged]
        if fresh:  # only the trials that used this evaluation; non-finite rows stay out
            fi = index(fresh)
            g[fi] = grads[fi]
        if iterate:
            _iterate(iterate)
    seconds = time.perf_counter() - t0
    return BatchedResult(results, rounds, seconds)
