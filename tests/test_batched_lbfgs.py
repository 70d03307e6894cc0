"""The batched L-BFGS (issue #12): torch's LBFGS per trial, trials independent of each other."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest
import torch

from attacks.batched_lbfgs import run_batched_lbfgs
from attacks.lbfgs_compact import compact_direction

F64 = torch.float64


def rosen(x: torch.Tensor, a: float) -> torch.Tensor:
    return ((a - x[:-1]) ** 2).sum() + 10 * ((x[1:] - x[:-1] ** 2) ** 2).sum()


def starts(k: int, n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return (torch.linspace(-1.5, 1.2, n, dtype=F64) + 0.3 * torch.randn(k, n, generator=g,
                                                                        dtype=F64))


A_PARAMS = [1.0, 0.5, 1.5, -0.7, 0.9, 1.2, 0.3, 2.0]


def rosen_batch(x0: torch.Tensor, params: list[float], **kw):
    """Trial k minimises rosen(·, params[k]); each trial's loss computed on its own row."""
    x = x0.clone().requires_grad_(True)

    def objective(v):
        return torch.stack([rosen(v[0][k], params[k]) for k in range(len(params))])

    return x, run_batched_lbfgs([x], objective, **kw)


def torch_lbfgs(x0: torch.Tensor, a: float, steps: int, max_iter: int,
                max_grad_evals: int | None = None, **kw):
    """torch.optim.LBFGS driven as DLG drives it: one ``step`` per outer step, caps cut."""
    p = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([p], max_iter=max_iter, **kw)
    evals, trace = [0], []

    def closure():
        opt.zero_grad()
        loss = rosen(p, a)
        loss.backward()
        evals[0] += 1
        return loss

    for _ in range(steps):
        if max_grad_evals is not None:
            if max_grad_evals - evals[0] <= 0:
                break
            opt.param_groups[0]["max_iter"] = min(max_iter, max_grad_evals - evals[0])
        trace.append(float(opt.step(closure).detach()))
    return p.detach(), trace, evals[0]


# (lr, max_iter, history_size, max_grad_evals): fixed-step runs whose trajectories are
# insensitive to rounding (a 1e-14 relative change of the start moves torch's losses by
# <= 1e-13); a short history (the pairs wrap around: history 3, 10, and 100 over 173 inner
# iterations), ones that converge early, cut by the cap, and a long one that never wraps (up
# to 164 pairs in the compact form's triangular systems)
CONFIGS = [(0.1, 3, 3, None), (0.2, 1, 3, None), (0.1, 20, 10, None), (0.2, 5, 3, None),
           (0.1, 5, 100, None), (0.1, 3, 3, 37), (0.1, 20, 10, 45), (0.1, 20, 1000, None)]


@pytest.mark.parametrize("lr,max_iter,history,cap", CONFIGS)
def test_one_trial_follows_torch_lbfgs(lr, max_iter, history, cap):
    # Tolerance: the same algorithm in float64, but the batch computes dot products as row
    # sums (torch.dot goes to BLAS: another summation order) and moves by x + t*d where torch
    # uses a fused add_(d, alpha=t): ulp-level (1e-16) differences per operation. On these
    # runs they stay below 1e-12 relative (measured: <= 4e-13); 1e-9 leaves a 1000x margin
    # while any algorithmic deviation (a step size, a pair, a stop) shows at 1e-3 or more.
    # Fixed-step runs on ill-conditioned paths amplify rounding exponentially (lr 1,
    # max_iter 20, history 3 here: 5% apart after 20 steps, torch against itself from a start
    # moved by 1e-14), which is why those are not configurations here.
    x0 = starts(1)[0]
    ours_x, res = rosen_batch(x0[None], [1.0], steps=50, lr=lr, max_iter=max_iter,
                              history_size=history, max_grad_evals=cap, trace_every=1)
    theirs_x, trace, evals = torch_lbfgs(x0, 1.0, 50, max_iter, cap, lr=lr,
                                         history_size=history)
    r = res.trials[0]
    assert not r.diverged
    assert r.loss_trace == pytest.approx(trace[:r.iterations], rel=1e-9, abs=1e-12)
    # torch goes on evaluating a converged trial's point without moving it: the same end
    assert torch.allclose(ours_x[0].detach(), theirs_x, rtol=0, atol=1e-9)
    if r.converged:
        assert r.stop_reason in ("tolerance_grad", "tolerance_change")
        assert r.grad_evals < evals and r.converged_at == (r.grad_evals, r.iterations)
    else:  # same evaluation count, step count and cap as torch's loop
        assert (r.grad_evals, r.iterations) == (evals, len(trace))
        assert r.stop_reason == ("steps" if cap is None else "max_grad_evals")
    if cap is not None:
        assert r.grad_evals == cap


def torch_cuts_searches() -> bool:
    """Whether this torch's LBFGS cuts a line search to the step's evaluations left
    (``max_ls=max_eval - current_evals``; older versions give every search 25)."""
    return "max_ls=" in inspect.getsource(torch.optim.LBFGS.step)


# (lr, max_iter, max_eval, history_size, steps, converges): strong-Wolfe runs that converge
# (the first three), runs whose small max_eval ends steps early and cuts searches, to the
# cap of `steps`, and two whose searches, cut to 1 or 2 evaluations, get stuck where torch
# repeats the same search every step (stopped as converged: the same point as torch's)
WOLFE_CONFIGS = [(1.0, 20, None, 100, 30, True), (0.5, 20, None, 10, 30, True),
                 (1.0, 10, None, 3, 30, True), (1.0, 3, 4, 5, 12, False),
                 (0.5, 5, 7, 10, 6, False), (1.0, 3, 2, 5, 20, True), (1.0, 1, 1, 5, 25, True)]


@pytest.mark.parametrize("lr,max_iter,max_eval,history,steps,converges", WOLFE_CONFIGS)
def test_one_strong_wolfe_trial_follows_torch_lbfgs(lr, max_iter, max_eval, history, steps,
                                                    converges):
    # Tolerance as in the fixed-step test above: the same algorithm in float64; the line
    # search's scalars are Python floats where torch keeps 0-d float64 tensors.
    if max_eval is not None and not torch_cuts_searches():
        pytest.skip("this torch gives each line search 25 evaluations whatever the step has")
    x0 = starts(1)[0]
    kw = dict(lr=lr, history_size=history, line_search_fn="strong_wolfe", max_eval=max_eval)
    ours_x, res = rosen_batch(x0[None], [1.0], steps=steps, max_iter=max_iter, trace_every=1,
                              **kw)
    theirs_x, trace, evals = torch_lbfgs(x0, 1.0, steps, max_iter, None, **kw)
    r = res.trials[0]
    assert not r.diverged
    assert r.loss_trace == pytest.approx(trace[:r.iterations], rel=1e-9, abs=1e-12)
    assert torch.allclose(ours_x[0].detach(), theirs_x, rtol=0, atol=1e-9)
    # torch's loop evaluates each step's start again: one evaluation more per later step
    if r.converged:  # torch goes on evaluating the same point
        assert r.stop_reason in ("tolerance_grad", "tolerance_change")
        assert r.grad_evals < evals - (r.iterations - 1)
    else:
        assert (r.grad_evals, r.iterations, r.stop_reason) == (
            evals - (len(trace) - 1), len(trace), "steps")
    assert r.converged == converges


def same_trial(a, b) -> None:
    assert (a.iterations, a.inner_iterations, a.grad_evals, a.loss_trace, a.final_loss,
            a.diverged, a.converged_at, a.stop_reason) == (
        b.iterations, b.inner_iterations, b.grad_evals, b.loss_trace, b.final_loss,
        b.diverged, b.converged_at, b.stop_reason)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_trial_alone_and_in_a_batch_of_8_is_identical_float64(threads, line_search):
    # Exact: each trial's loss is computed on its own row, the optimiser's bookkeeping is
    # row-wise (row sums of 8 elements, element-wise ops, masks), and each trial's direction
    # comes from its own history slices with the same kernels in any batch; here the slices
    # of the history and of the gradient sit at 64-byte multiples (3 pairs x 8 float64), so
    # kernels that choose a path by alignment choose alike, with 1 or 2 threads.
    torch.set_num_threads(threads)
    x0 = starts(8)
    kw = dict(steps=40, lr=0.5, max_iter=5, history_size=3, trace_every=3,
              line_search_fn=line_search)
    xb, batch = rosen_batch(x0, A_PARAMS, **kw)
    stops = {t.stop_reason for t in batch.trials}
    assert len({t.grad_evals for t in batch.trials}) > 1, stops  # trials stop differently
    for i in (0, 3, 7):
        xa, alone = rosen_batch(x0[i:i + 1], A_PARAMS[i:i + 1], **kw)
        assert torch.equal(xa[0], xb[i])
        same_trial(alone.trials[0], batch.trials[i])


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.fc1, self.fc2 = torch.nn.Linear(12, 10), torch.nn.Linear(10, 4)

    def forward(self, x):
        return self.fc2(torch.sigmoid(self.fc1(x)))


def dlg_objective(net: TinyNet, observed: list[list[torch.Tensor]]):
    """DLG's gradient matching per trial (a python loop; create_graph for the 2nd order)."""
    params = list(net.parameters())

    def objective(v):
        x, logits = v
        losses = []
        for k in range(x.shape[0]):
            out = net(x[k])
            loss = -(logits[k].softmax(-1) * out.log_softmax(-1)).sum(-1).mean()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            losses.append(sum(((g - o) ** 2).sum() for g, o in zip(grads, observed[k])))
        return torch.stack(losses)

    return objective


def dlg_setup(k: int):
    net = TinyNet()
    gen = torch.Generator().manual_seed(11)
    observed = []
    for _ in range(k):  # each trial attacks its own secret batch of 2
        secret, label = torch.randn(2, 12, generator=gen), torch.randint(4, (2,), generator=gen)
        loss = torch.nn.functional.cross_entropy(net(secret), label)
        observed.append([g.detach() for g in torch.autograd.grad(loss, list(net.parameters()))])
    x0 = torch.randn(k, 2, 12, generator=gen)
    logits0 = torch.randn(k, 2, 4, generator=gen)
    return net, observed, x0, logits0


def run_dlg(net, observed, x0, logits0, **kw):
    x, logits = x0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
    res = run_batched_lbfgs([x, logits], dlg_objective(net, observed), **kw)
    return x.detach(), res


def test_stopped_trials_leave_the_batch_and_the_others_run_on_unchanged():
    # with rows_objective, an evaluation after a trial stopped computes only the running
    # trials: the batch shrinks, and every trial's run is the one it makes with all rows
    # evaluated throughout (float64, a per-trial objective: identical)
    net, observed, x0, logits0 = dlg_setup(6)
    net = net.double()
    observed = [[o.double() for o in obs] for obs in observed]
    x0, logits0 = x0.double(), logits0.double()
    full = dlg_objective(net, observed)
    evaluated: list[list[int]] = []

    def rows_objective(v, rows):
        evaluated.append(list(rows))
        return dlg_objective(net, [observed[k] for k in rows])(v)

    kw = dict(steps=12, lr=1.0, max_iter=5, history_size=10, tolerance_change=1e-6)
    xs, runs = [], []
    for extra in ({}, {"rows_objective": rows_objective}):
        x, logits = x0.clone().requires_grad_(True), logits0.clone().requires_grad_(True)
        runs.append(run_batched_lbfgs([x, logits], full, **kw, **extra))
        xs.append(x.detach())
    everyone, shrinking = runs
    assert len({t.grad_evals for t in everyone.trials}) > 1  # trials stop at different times
    assert evaluated and min(len(r) for r in evaluated) < 6  # the batch shrank
    assert len(evaluated) < everyone.rounds  # the full-batch rounds ran through `full`
    assert torch.equal(xs[0], xs[1])
    for a, b in zip(everyone.trials, shrinking.trials):
        same_trial(a, b)


def test_dlg_float32_trial_alone_and_in_a_batch_of_8():
    # Tolerance: a trial does the same float32 operations alone and in the batch, and on the
    # development machine the results are bitwise equal. But float32 GEMMs (MKL/oneDNN) may
    # pick kernels by an operand's memory alignment, and a trial's rows sit at another offset
    # inside the batch, so on other CPUs each evaluation may differ by a few ulps. How far
    # that carries: moving this run's start by one float32 ulp (2**-23 relative) moves the
    # variables after its 10 evaluations by <= 1.6e-5 and the final loss by <= 2.5e-5
    # relative (measured). 1e-3 leaves a 40x margin; a trial mixing in another's state or
    # step would be off by O(1). The run is kept short (one step of 10 evaluations, the loss
    # down >= 75x) because fixed-step L-BFGS in float32 amplifies rounding: after 40
    # evaluations the same 1-ulp move reaches 3e-3.
    net, observed, x0, logits0 = dlg_setup(8)
    kw = dict(steps=1, lr=1.0, max_iter=10, history_size=100)
    xb, batch = run_dlg(net, observed, x0, logits0, **kw)
    for i in (0, 5):
        xa, alone = run_dlg(net, observed[i:i + 1], x0[i:i + 1], logits0[i:i + 1], **kw)
        a, b = alone.trials[0], batch.trials[i]
        assert (a.grad_evals, a.stop_reason) == (b.grad_evals, b.stop_reason) == (10, "steps")
        assert not b.diverged and b.final_loss < b.loss_trace[0] / 50  # the attack works
        assert a.loss_trace == pytest.approx(b.loss_trace, rel=1e-5)  # the start's loss
        assert torch.allclose(xa[0], xb[i], rtol=0, atol=1e-3)
        assert a.final_loss == pytest.approx(b.final_loss, rel=1e-3)


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_a_nan_trial_is_frozen_and_does_not_touch_the_others(line_search):
    x0 = starts(8)
    kw = dict(steps=30, lr=0.5, max_iter=5, history_size=3, trace_every=1,
              line_search_fn=line_search)
    xc, clean = rosen_batch(x0, A_PARAMS, **kw)
    evals = [0]
    x = x0.clone().requires_grad_(True)

    def poisoned(v):
        evals[0] += 1
        bad = float("nan") if evals[0] >= 9 else 1.0  # trial 5 turns NaN at its 9th evaluation
        return torch.stack([rosen(v[0][k], A_PARAMS[k]) * (bad if k == 5 else 1.0)
                            for k in range(8)])

    res = run_batched_lbfgs([x], poisoned, **kw)
    bad = res.trials[5]
    assert bad.diverged and bad.stop_reason == "diverged" and bad.grad_evals == 9
    assert math.isfinite(bad.final_loss) and torch.isfinite(x[5]).all()
    assert bad.converged_at is None
    for k in range(8):
        if k != 5:
            assert torch.equal(x[k], xc[k])
            same_trial(res.trials[k], clean.trials[k])


def test_a_trial_that_overflows_is_frozen():
    # trial 1's huge start overflows the loss: diverged, untouched, the others finish
    x0 = starts(3)
    x0[1] *= 1e80
    x, res = rosen_batch(x0, A_PARAMS[:3], steps=20, lr=1.0, max_iter=5)
    assert res.trials[1].diverged and res.trials[1].grad_evals == 1  # x**4 overflows
    assert res.trials[1].iterations == 0 and torch.equal(x[1].detach(), x0[1])
    _, alone = rosen_batch(x0[[0, 2]], [A_PARAMS[0], A_PARAMS[2]], steps=20, lr=1.0, max_iter=5)
    for k, t in zip((0, 2), alone.trials):
        assert not res.trials[k].diverged and res.trials[k].converged
        same_trial(res.trials[k], t)


@pytest.mark.parametrize("cap,max_iterations,steps,max_iter", [
    (1, None, 50, 20), (7, None, 50, 20), (23, None, 50, 4), (40, 3, 50, 20),
    (None, 4, 50, 20), (None, None, 6, 7), (0, None, 5, 20)])
@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_caps_are_never_exceeded(cap, max_iterations, steps, max_iter, line_search):
    x0 = starts(8)
    evals = [0]
    x = x0.clone().requires_grad_(True)

    def objective(v):
        evals[0] += 1
        return torch.stack([rosen(v[0][k], A_PARAMS[k]) for k in range(8)])

    res = run_batched_lbfgs([x], objective, steps=steps, lr=0.1, max_iter=max_iter,
                            max_grad_evals=cap, max_iterations=max_iterations,
                            line_search_fn=line_search)
    step_cap = min(steps, max_iterations or steps)
    assert res.rounds == evals[0] == max(t.grad_evals for t in res.trials)
    for t in res.trials:
        assert t.iterations <= step_cap
        if line_search is None:  # at most one evaluation per inner iteration
            assert t.grad_evals <= t.iterations * max_iter
        else:  # at most max_eval per step, + 1: torch's count has each step's start evaluated,
            assert t.grad_evals <= t.iterations * (max_iter * 5 // 4) + 1  # only the 1st is
        if cap is not None:
            assert t.grad_evals <= cap
        if t.stop_reason == "max_grad_evals":
            assert t.grad_evals == cap
        if t.stop_reason == "steps":
            assert t.iterations == step_cap
    if cap == 0:
        assert res.rounds == 0 and torch.equal(x.detach(), x0)


def test_per_trial_stopping_freezes_a_converged_trial():
    x0 = starts(4)
    x0[0] = 1.0  # trial 0 starts at its minimum: zero loss and gradient at the 1st evaluation
    x0[1] = 1.0 + 1e-3 * torch.arange(8, dtype=F64)  # trial 1 starts near its minimum
    params = [1.0, 1.0, 1.5, -0.7]
    x, res = rosen_batch(x0, params, steps=40, lr=0.1, max_iter=5, history_size=4,
                         snapshot_at=[1, 2, 30, *range(60, 200)])
    t0, t1, t2, t3 = res.trials
    assert t0.converged and t0.converged_at == (1, 1) and t0.stop_reason == "tolerance_grad"
    assert torch.equal(x[0].detach(), x0[0])  # frozen where it stopped
    assert t1.converged and t1.stop_reason == "tolerance_change"
    assert t1.converged_at == (t1.grad_evals, t1.iterations) and t1.iterations < 40
    # it stopped without moving: its variables are those of its last evaluation
    assert t1.snapshots[-1].evals == t1.grad_evals
    assert torch.equal(x[1].detach(), t1.snapshots[-1].variables[0])
    assert t2.iterations == 40 and t2.stop_reason == "steps" and t2.converged_at is None
    assert t1.grad_evals < t2.grad_evals <= 200
    assert res.rounds == max(t.grad_evals for t in res.trials)
    # snapshots: the variables at those evaluation counts with their loss, none past the end
    assert [s.evals for s in t0.snapshots] == [1]
    assert [s.evals for s in t2.snapshots] == [1, 2, 30, *range(60, t2.grad_evals + 1)]
    for s in t2.snapshots + t3.snapshots:
        assert s.variables[0].device.type == "cpu" and s.variables[0].shape == (8,)
    for s in t2.snapshots:
        assert s.loss == rosen(s.variables[0], params[2]).item()
    assert torch.equal(t2.snapshots[0].variables[0], x0[2])
    assert all(a.seconds <= b.seconds for a, b in zip(t2.snapshots, t2.snapshots[1:]))


def ticking_clock(monkeypatch, module) -> None:
    """``module``'s ``time.perf_counter`` advances by exactly 1 s at each call."""
    ticks = iter(range(10**9))
    monkeypatch.setattr(module, "time", SimpleNamespace(perf_counter=lambda: float(next(ticks))))


def test_each_trial_pays_its_share_of_the_evaluations_it_took_part_in(monkeypatch):
    # one tick per evaluation: trial k's clock is the sum, over the evaluations it was in, of
    # 1 / the trials evaluated, so a trial that stops early is not charged for the rest
    import attacks.batched_lbfgs as batched_lbfgs

    ticking_clock(monkeypatch, batched_lbfgs)
    x0 = starts(4)
    x0[0] = 1.0  # converges at its first evaluation
    _, res = rosen_batch(x0, [1.0, 1.0, 1.5, -0.7], steps=12, lr=0.1, max_iter=5,
                         history_size=4, snapshot_at=[1, 2, 7, 30])
    evals = [t.grad_evals for t in res.trials]
    assert evals[0] == 1 and len(set(evals)) > 1

    def clock(e: int) -> float:  # the rounds 1..e, each split among the trials still in it
        return sum(1 / sum(n >= r for n in evals) for r in range(1, e + 1))

    for t in res.trials:
        assert t.seconds == pytest.approx(clock(t.grad_evals))
        assert [s.seconds for s in t.snapshots] == pytest.approx(
            [clock(s.evals) for s in t.snapshots])
        if t.converged:
            assert t.converged_seconds == t.seconds
    assert res.trials[0].seconds == pytest.approx(0.25)
    assert res.round_shares == pytest.approx(
        [1 / sum(n >= r for n in evals) for r in range(1, res.rounds + 1)])
    assert sum(t.seconds for t in res.trials) == pytest.approx(res.rounds)


def test_patience_stops_a_trial_that_stalls():
    # max_iter 1: every evaluation starts a step, so the loss trace holds every loss and the
    # criterion can be recomputed exactly from the run without patience
    x0 = starts(2)
    kw = dict(steps=300, lr=0.05, max_iter=1, history_size=5, trace_every=1)
    _, plain = rosen_batch(x0, A_PARAMS[:2], **kw)
    _, patient = rosen_batch(x0, A_PARAMS[:2], patience=5, min_rel_improvement=0.01, **kw)
    for p, q in zip(plain.trials, patient.trials):
        best = [min(p.loss_trace[:i + 1]) for i in range(len(p.loss_trace))]
        stalled = [s for s in range(5, len(best)) if best[s - 5] - best[s] <= 0.01 * best[s - 5]]
        assert q.stop_reason == "patience" and q.converged
        assert q.iterations == stalled[0] + 1 < p.iterations
        assert q.converged_at == (q.grad_evals, q.iterations)
        assert q.loss_trace == p.loss_trace[:q.iterations]  # the same run up to the stop
    assert all(t.stop_reason != "patience" for t in plain.trials)  # off by default


def test_bad_arguments():
    x = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="line_search_fn"):
        run_batched_lbfgs([x], lambda v: (v[0] ** 2).sum(1), 1, line_search_fn="backtracking")
    with pytest.raises(ValueError, match="shape"):
        run_batched_lbfgs([x], lambda v: (v[0] ** 2).sum(), 1)
    with pytest.raises(ValueError, match="leading"):
        run_batched_lbfgs([x, torch.zeros(3, 1, requires_grad=True)],
                          lambda v: (v[0] ** 2).sum(1), 1)


def two_loop(g: torch.Tensor, pairs: list[tuple[torch.Tensor, torch.Tensor]], gamma: float
             ) -> torch.Tensor:
    """-H g by Nocedal's two-loop recursion over ``pairs`` oldest-first (the textbook form)."""
    q, alphas = g.clone(), []
    for s, y in reversed(pairs):
        a = s.dot(q) / y.dot(s)
        alphas.append(a)
        q = q - a * y
    r = gamma * q
    for (s, y), a in zip(pairs, reversed(alphas)):
        r = r + s * (a - y.dot(r) / y.dot(s))
    return -r


@pytest.mark.parametrize("length,head", [(0, 0), (1, 0), (7, 0), (7, 3), (7, 6), (40, 17)])
def test_compact_direction_is_the_two_loop_direction(length, head):
    # float64, well-conditioned random pairs (y = A s for a positive definite A, so y.s > 0):
    # the two forms differ only by rounding; 1e-10 relative leaves a wide margin over it.
    gen = torch.Generator().manual_seed(length + head)
    n = 30
    m = torch.randn(n, n, generator=gen, dtype=F64)
    a = m @ m.T / n + torch.eye(n, dtype=F64)
    pairs = []
    for _ in range(length):
        s = torch.randn(n, generator=gen, dtype=F64)
        pairs.append((s, a @ s))
    order = [(head + i) % max(length, 1) for i in range(length)]  # slot of the i-th oldest
    s_slots, y_slots = torch.zeros(length, n, dtype=F64), torch.zeros(length, n, dtype=F64)
    for age, slot in enumerate(order):
        s_slots[slot], y_slots[slot] = pairs[age]
    sy, yy = s_slots @ y_slots.T, y_slots @ y_slots.T
    g = torch.randn(n, generator=gen, dtype=F64)
    gamma = 0.7
    ours = compact_direction(g, gamma, torch.stack([s_slots, y_slots], 1), sy, yy, head)
    theirs = two_loop(g, pairs, gamma)
    assert torch.allclose(ours, theirs, rtol=1e-10, atol=1e-12)



def ridge(bump_from: float, bump_to: float, base):
    """A loss of s = x1 + x2 with a flat bump of 20 (no gradient from it) on bump_from < s <=
    bump_to: a line search along +s meets a wall it cannot see coming."""
    def objective(v):
        s = v[0][..., 0] + v[0][..., 1]
        return base(s) + 20 * ((s > bump_from) & (s <= bump_to)).to(s.dtype)
    return objective


@pytest.mark.parametrize("max_eval", [11, 12, 13, 500])
def test_a_search_that_finds_no_lower_point_stops_the_trial_once(max_eval):
    # the first search from s = 0 meets the bump and ends on its tolerance after 11
    # evaluations; the second (not the run's first: a step of lr) does the same. That is
    # where torch would go on forever, whether or not the step's count is then used up
    x = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    res = run_batched_lbfgs([x], ridge(0, math.inf, lambda s: 1 - s), 6, lr=1.0, max_iter=20,
                            max_eval=max_eval, line_search_fn="strong_wolfe")
    r = res.trials[0]
    assert (r.stop_reason, r.converged, r.final_loss) == ("tolerance_change", True, 1.0)
    assert r.grad_evals == 12 and r.iterations <= 2


def test_a_first_search_that_finds_no_lower_point_does_not_stop_the_trial():
    # the run's first step is lr·min(1, 1/|g|_1) = 1/6 into the bump (0 < s <= 1); the next
    # step searches from lr = 1, past the bump, down to the minimum at s = 3, as torch does
    kw = dict(lr=1.0, max_iter=20, max_eval=500, history_size=10, line_search_fn="strong_wolfe")
    objective = ridge(0, 1, lambda s: (s - 3) ** 2 - 8)
    p = torch.zeros(2, dtype=F64, requires_grad=True)
    opt = torch.optim.LBFGS([p], **kw)

    def closure():
        opt.zero_grad()
        loss = objective([p[None]])[0]
        loss.backward()
        return loss

    theirs = [opt.step(closure).item() for _ in range(3)]
    x = torch.zeros(1, 2, dtype=F64, requires_grad=True)
    r = run_batched_lbfgs([x], objective, 3, trace_every=1, **kw).trials[0]
    assert theirs[:2] == r.loss_trace[:2] == [1.0, 1.0]  # the first search found nothing
    assert r.final_loss == pytest.approx(-8.0) == objective([x])[0].item()
    assert r.final_loss == pytest.approx(theirs[-1])


def test_line_search_snapshots_are_the_estimate_a_cut_would_return():
    # during a search the snapshot is its lowest point so far, not the probe just evaluated
    # (which may overshoot): with the line search the estimates only improve
    x0 = starts(2)
    _, res = rosen_batch(x0, A_PARAMS[:2], steps=30, lr=1.0, max_iter=5, history_size=4,
                         line_search_fn="strong_wolfe", snapshot_at=list(range(1, 200)))
    for k, t in enumerate(res.trials):
        losses = [s.loss for s in t.snapshots]
        assert len(losses) == t.grad_evals
        assert all(b <= a for a, b in zip(losses, losses[1:]))
        for s in t.snapshots[::7]:
            assert s.loss == pytest.approx(rosen(s.variables[0], A_PARAMS[k]).item(), rel=1e-12)


GEN = torch.Generator().manual_seed(0)
WAVES = (torch.randn(16, 6, 3, generator=GEN, dtype=F64),
         torch.randn(16, 6, generator=GEN, dtype=F64),
         2 * torch.randn(16, 6, generator=GEN, dtype=F64).abs())


def wavy(v):
    """Per trial, sum_j c_j sin(a_j . x + b_j) + 0.05 |x|^2: many minima, searches overshoot."""
    a, b, c = WAVES
    return (c * torch.sin(torch.einsum("kjn,kn->kj", a, v[0]) + b)).sum(1) + 0.05 * (
        v[0] ** 2).sum(1)


@pytest.mark.parametrize("max_iter,max_eval", [(3, 2), (4, 5), (20, None)])
def test_the_snapshot_at_n_evaluations_is_what_a_cap_of_n_returns(max_iter, max_eval):
    # a snapshot is the estimate of a run stopped there: inside a search its lowest point,
    # at a search's last evaluation the point the search returns (which may be another)
    x0 = 2 * torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    kw = dict(steps=40, lr=1.0, max_iter=max_iter, max_eval=max_eval, history_size=5,
              line_search_fn="strong_wolfe")

    def run(**more):
        x = x0.clone().requires_grad_(True)
        return x, run_batched_lbfgs([x], wavy, **kw, **more)

    _, full = run(snapshot_at=list(range(1, 31)))
    for n in range(1, 31):
        xc, capped = run(max_grad_evals=n)
        for k, (whole, cut) in enumerate(zip(full.trials, capped.trials)):
            snap = [s for s in whole.snapshots if s.evals == n]
            if not snap:  # the whole run stopped before n evaluations
                assert whole.grad_evals < n
                continue
            assert torch.equal(snap[0].variables[0], xc[k].detach())
            assert snap[0].loss == cut.final_loss
