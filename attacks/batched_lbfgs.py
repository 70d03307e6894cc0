"""Batched L-BFGS: K independent trials of DLG/iDLG optimised together (issue #12).

DLG (Zhu, Liu, Han, NeurIPS 2019) and iDLG (Zhao et al. 2020) minimise a gradient-matching
loss with L-BFGS (Nocedal 1980; Liu & Nocedal 1989), and a cell runs many such trials (seeds,
restarts). Here K trials share every objective evaluation while each keeps its own L-BFGS
state (curvature history, step size, line search, counters, stopping). The arithmetic is
row-wise per trial and each direction comes from the trial's own history slices, so a trial
alone and inside a batch follow the same trajectory (up to BLAS kernels that may round by
memory alignment), and a trial that turns non-finite is frozen without touching the others.

Per trial the algorithm is ``torch.optim.LBFGS`` called once per outer step, as DLG's loop
calls it (written anew): a step evaluates the objective, stops if ``max|g| <=
tolerance_grad``, then makes up to ``max_iter`` inner iterations, the run's first along ``-g``
with step ``lr * min(1, 1/|g|_1)``, later ones along ``-H g`` for the last ``history_size``
pairs (kept when ``y.s > 1e-10``; ``H0 = y.s / y.y``) in the compact form
(:mod:`attacks.lbfgs_compact`). ``line_search_fn=None`` (DLG's code) moves by that fixed step
and evaluates after the move unless it is the step's last; ``"strong_wolfe"`` searches from
it (:mod:`attacks.strong_wolfe`; at most one evaluation more than the step has left, as torch
cuts it), and the next step begins at the accepted, evaluated point without evaluating it
again (torch does: the same path; ``max_eval`` still counts it, so steps end where torch's
do). A step ends early on ``max_eval`` evaluations, ``max|g| <= tolerance_grad``, ``max|d t|
<= tolerance_change``, a loss change below ``tolerance_change`` or ``g.d > -tolerance_change``.

Per-trial stopping, where torch would go on evaluating the same point forever (converged):
``max|g| <= tolerance_grad`` at a step's start, a loss at the opt-in ``loss_floor``,
``g.d > -tolerance_change``, or a
line search (not the run's first) that finds no lower point with the most evaluations a
search gets (not cut short by earlier iterations of its step).
A stopped trial is frozen; with ``rows_objective`` it also leaves the evaluations (the rest
cost only their own rows). Each trial keeps its own clock: the wall time of every evaluation
it took part in (with the bookkeeping since the one before), split evenly among the trials
evaluated; its convergence and snapshots are timed by it, so a trial that stops early is not
charged for the rounds its batch-mates ran after. Opt-in ``patience``: with ``best_s`` the
lowest loss evaluated before step ``s``, stop at ``s`` when ``best_{s-patience} - best_s <=
min_rel_improvement * |best_{s-patience}|``. Caps: ``steps`` (and ``max_iterations``) and
``max_grad_evals`` evaluations (a fixed step's inner iterations are cut to fit; a line search
cut by it ends at the lowest point it evaluated).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch

from attacks.lbfgs_compact import CurvatureHistory
from attacks.lbfgs_evaluate import RowsObjective, evaluate_trials
from attacks.lbfgs_results import START as _START
from attacks.lbfgs_results import BatchedResult, Snapshot, TrialResult, TrialState
from attacks.stopping import Plateau
from attacks.strong_wolfe import Point, strong_wolfe

_INNER, _SEARCH, _DONE = 1, 2, 3  # a trial's phases after _START
LINE_SEARCHES = (None, "strong_wolfe")


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
    rows_objective: RowsObjective | None = None,
    loss_floor: float | None = None,
) -> BatchedResult:
    """Minimise K independent objectives with one L-BFGS per trial, evaluated together.

    ``variables``: leaf tensors with ``requires_grad``, each ``[K, ...]`` (trial first),
    updated in place. ``objective(variables)`` returns the K per-trial losses, shape ``[K]``;
    trial k's loss must depend only on row k of each variable (no cross-trial BatchNorm or
    reductions), so the gradient of ``losses.sum()`` is each trial's own. Options follow
    ``torch.optim.LBFGS`` (``max_iter``: inner iterations per outer step; ``max_eval``
    defaults to ``max_iter * 5 // 4``) and DLG's loop (``steps``, ``max_grad_evals``,
    ``max_iterations``; ``trace_every``: the step-start loss of steps ``0, trace_every, ...``
    and ``steps - 1``); ``patience``/``min_rel_improvement``: the module docstring's opt-in
    stop; ``snapshot_at``: sorted evaluation counts at which each trial's variables are
    copied. A trial whose loss, gradient or variables turn non-finite is marked diverged and
    frozen. ``rows_objective(variables, rows)``, when given, is ``objective`` over the listed
    trials only (``variables`` then hold those rows): once a trial has stopped, each
    evaluation costs only the trials still running. ``loss_floor``: the least value each
    objective can take (squared L2: 0), where a trial stops (``zero_loss``); None, as torch:
    no such stop. Memory: ``2 K m n`` elements of history
    plus ``2 K m**2`` float64 products, for ``m = history_size`` cut to the pairs the run
    can make (``steps * max_iter``, ``max_grad_evals``) and ``n`` a trial's variable count,
    as K torch optimisers would.
    """
    if line_search_fn not in LINE_SEARCHES:
        raise ValueError(f"line_search_fn must be one of {LINE_SEARCHES}, got {line_search_fn!r}")
    wolfe = line_search_fn == "strong_wolfe"
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
    g = torch.zeros_like(x)
    prev_g = torch.zeros_like(x)
    moved = torch.zeros_like(x)  # each trial's last move, t·d: the next pair's s
    origin = torch.zeros_like(x) if wolfe else x  # where each trial's line search started
    ahead = torch.zeros_like(x) if wolfe else x  # and its direction d
    keep_above = torch.tensor(1e-10, dtype=x.dtype).item()  # y.s > 1e-10 in x's precision
    history = CurvatureHistory(k_trials, m, x)
    states = [TrialState() for _ in range(k_trials)]
    results = [TrialResult() for _ in range(k_trials)]

    def stop(k: int, reason: str) -> None:
        st, res = states[k], results[k]
        st.phase, st.search = _DONE, None
        res.stop_reason = reason
        if reason not in ("steps", "max_grad_evals", "diverged"):
            res.converged = True
            res.converged_at = (res.grad_evals, res.iterations)
            res.converged_seconds = res.seconds

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

    def snapshot(k: int, loss: float, searched: Point | None = None) -> None:
        """Trial k's estimate now: its point, or a search's lowest (where a cap cuts it)."""
        st, res = states[k], results[k]
        while st.snap_next < len(snaps) and snaps[st.snap_next] <= res.grad_evals:
            if snaps[st.snap_next] == res.grad_evals:
                row = x[k] if searched is None else origin[k] + ahead[k] * searched.t
                parts = row.detach().split(sizes)
                res.snapshots.append(Snapshot(
                    res.grad_evals, res.seconds,
                    loss if searched is None else searched.f,
                    [p.reshape(v.shape[1:]).cpu().clone() for p, v in zip(parts, variables)]))
            st.snap_next += 1

    every = list(range(k_trials))

    def index(rows: list[int]) -> torch.Tensor | slice:
        """Rows ``rows`` of a [K, ...] tensor: a slice (views, no gathering) when they are all
        the trials, as they are for a lone trial and for a batch that advances in step."""
        return slice(None) if rows == every else torch.tensor(rows, device=x.device)

    def spent(k: int) -> bool:  # no evaluation left for a line search
        return max_grad_evals is not None and results[k].grad_evals >= max_grad_evals

    def start_step(k: int, gmax: float, iterate: list[int]) -> None:
        """Trial k begins an outer step at its current point (loss ``states[k].loss``)."""
        st, res = states[k], results[k]
        step = res.iterations
        res.iterations += 1
        if step % trace_every == 0 or step == steps - 1:
            res.loss_trace.append(st.loss)
        st.step_evals, st.n_iter = 1, 0  # torch's step evaluates its start (here, maybe not)
        st.bests.append(st.best)
        if gmax <= tolerance_grad:
            stop(k, "tolerance_grad")
        elif loss_floor is not None and st.loss <= loss_floor:  # an exact match: no way down
            stop(k, "zero_loss")
        elif plateau.stalled(st.bests):
            stop(k, "patience")
        elif wolfe and spent(k):
            stop(k, "max_grad_evals")
        else:
            iterate.append(k)

    def move_to(k: int, point: Point) -> None:
        """Trial k's line search ends at ``point`` (evaluated): its point, gradient, loss."""
        st = states[k]
        st.search = st.lowest = None
        with torch.no_grad():
            moved[k] = ahead[k] * point.t
            x[k] = origin[k] + moved[k]
            g[k] = point.payload[0]
        write_back(slice(k, k + 1))
        st.loss = results[k].final_loss = point.f

    def accept(k: int, point: Point, exhausted: bool, iterate: list[int]) -> None:
        """Trial k's line search accepted ``point``: move there and go on as torch's step
        does after its line search."""
        st = states[k]
        move_to(k, point)
        gmax = point.payload[1]
        st.dt_max = float(moved[k].abs().amax())  # 0 when no point along d was lower:
        if point.t == 0.0 and st.total_iter > 1 and (not exhausted or st.n_iter == 1):
            return stop(k, "tolerance_change")  # the next search would repeat this one:
        # not the run's first (a smaller step), and not cut short by an earlier iteration
        if (st.n_iter == st.step_max_iter or st.step_evals >= max_eval
                or gmax <= tolerance_grad or st.dt_max <= tolerance_change
                or abs(st.loss - st.prev_loss) < tolerance_change):
            begin_step(k)  # stops the trial on a cap
            if st.phase == _START:
                start_step(k, gmax, iterate)
        elif spent(k):
            stop(k, "max_grad_evals")
        else:
            iterate.append(k)

    @torch.no_grad()
    def _iterate(rows: list[int]) -> None:
        """One inner L-BFGS iteration for trials ``rows``: the direction, then the fixed
        step's move or the first point of a line search.

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
                if ys > keep_above:
                    history.push(rows[upd[j]], s[j], y[j], ys, scale)
        first = []
        for j, k in enumerate(rows):
            st = states[k]
            if st.total_iter == 0:
                history.reset(k)
                first.append(j)
            st.total_iter += 1
            st.n_iter += 1
            results[k].inner_iterations += 1
        if len(rows) == 1:
            r = history.direction(rows[0], gk[0]).unsqueeze(0)
        else:  # one trial at a time: on the CPU, K matrix-vector products beat one batched
            r = torch.stack([history.direction(k, gk[j]) for j, k in enumerate(rows)])  # GEMM
        prev_g[ix] = gk
        steps_t = [lr] * len(rows)
        if first:  # the very first iteration's step: lr * min(1, 1/|g|_1)
            sizes_1 = ((1.0 / gk[first].abs().sum(1)).clamp(max=1.0) * lr).tolist()
            for j, size in zip(first, sizes_1):
                steps_t[j] = size
        tk = steps_t[0] if len(set(steps_t)) == 1 else torch.tensor(
            steps_t, dtype=x.dtype, device=x.device)[:, None]
        step = r * tk
        rowwise = [_rowdot(gk, r), (r if wolfe else step).abs().amax(1)]
        if wolfe:  # a search starting here needs the origin's max|g| if it returns there
            rowwise.append(gk.abs().amax(1))
        gtd_dt = torch.stack(rowwise).tolist()
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
            im, step, r = index([rows[j] for j in movers]), step[movers], r[movers]
        if wolfe:  # each trial's search starts at its first step length
            origin[im], ahead[im] = x[im], r
            for j in movers:
                st = states[rows[j]]
                start = (gk[j].clone(), gtd_dt[2][j])  # the origin's gradient, max|g|
                st.search = strong_wolfe(st.loss, gtd_dt[0][j], steps_t[j], gtd_dt[1][j],
                                         start, tolerance_change=tolerance_change,
                                         max_ls=max_eval - st.step_evals)  # as torch cuts it
                st.lowest = Point(0.0, st.loss, gtd_dt[0][j], start)
                st.probe = next(st.search)  # steps_t[j]
                st.phase = _SEARCH
            x[im] = origin[im] + step
            write_back(im)
            return
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

    rounds, mark, shares = 0, t0, []
    while any(st.phase != _DONE for st in states):
        used = [k for k in range(k_trials) if states[k].phase != _DONE]
        losses, grads = evaluate_trials(variables, objective, rows_objective, used, x)
        rounds += 1
        now = time.perf_counter()  # the trials evaluated share the time since the last one
        shares.append((now - mark) / len(used))
        for k in used:
            results[k].seconds += shares[-1]
        mark = now
        with torch.no_grad():  # max|.| is NaN or inf exactly when a row is not finite
            checks = [grads.abs().amax(1), x.abs().amax(1)]
            if wolfe:
                checks.append(_rowdot(grads, ahead))  # each search's slope g.d
            gmax, xmax, *slope = torch.stack(checks).tolist()
        iterate: list[int] = []
        fresh: list[int] = []  # trials whose current gradient is this evaluation's
        probes: list[tuple[int, float]] = []  # (trial, step length) to evaluate next
        for k in used:
            st, res = states[k], results[k]
            res.grad_evals += 1
            f = losses[k]
            if not (math.isfinite(gmax[k]) and math.isfinite(xmax[k]) and math.isfinite(f)):
                res.diverged = True
                stop(k, "diverged")
                continue
            st.best = min(st.best, f)
            if st.phase == _SEARCH:
                st.step_evals += 1
                here = Point(st.probe, f, slope[0][k], (grads[k], gmax[k]))
                st.lowest = min(st.lowest, here, key=lambda p: p.f)  # ties: the earlier
                try:
                    st.probe = st.search.send((here.f, here.gtd, here.payload))
                except StopIteration as done:
                    snapshot(k, f, done.value[0])  # where the search ends
                    accept(k, *done.value, iterate)
                    continue
                snapshot(k, f, st.lowest)  # where a cap would cut it
                if spent(k):
                    move_to(k, st.lowest)  # the cap cuts the search at its lowest point
                    stop(k, "max_grad_evals")
                    continue
                probes.append((k, st.probe))
                continue
            st.loss = res.final_loss = f
            snapshot(k, f)
            fresh.append(k)
            if st.phase == _START:
                start_step(k, gmax[k], iterate)
            else:
                st.step_evals += 1
                if (st.step_evals >= max_eval or gmax[k] <= tolerance_grad
                        or st.dt_max <= tolerance_change
                        or abs(f - st.prev_loss) < tolerance_change):
                    begin_step(k)
                else:
                    iterate.append(k)
        if fresh:  # only the trials that used this evaluation; non-finite rows stay out
            fi = index(fresh)
            g[fi] = grads[fi]
        if probes:
            with torch.no_grad():
                ip = index([k for k, _ in probes])
                ts = torch.tensor([t for _, t in probes], dtype=x.dtype, device=x.device)
                x[ip] = origin[ip] + ahead[ip] * ts[:, None]
            write_back(ip)
        if iterate:
            _iterate(iterate)
    return BatchedResult(results, rounds, time.perf_counter() - t0, shares)
