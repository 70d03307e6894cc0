"""Gradient matching: the objective and optimiser loop shared by the optimisation attacks.

An optimisation attack is configuration over this loop: which distance between the
dummy batch's gradient and the observed one, which priors, which optimiser. The
loop counts every gradient evaluation (an L-BFGS step costs up to 20) and stops on
a non-finite loss, which the harness then records as a diverged run.

- :func:`dummy_gradient` / :func:`unrolled_delta` / :func:`dummy_update`: what the client
  would have shared for a dummy batch, differentiably (FedSGD gradient, or the FedAvg
  weight delta of Dimitrov et al. 2022's unrolled local SGD); on a secure aggregate, the
  K clients' updates combined as the server sees them.
- :func:`l2_distance` (DLG) and :func:`cosine_distance` (Inverting Gradients).
- :func:`run_signed_adam` (GradInversion, whose objective couples its restarts: Adam on
  the gradient's sign, step decay, box projection, restarts). DLG, iDLG and Inverting
  Gradients run their trials batched (:mod:`attacks.batched_lbfgs`,
  :mod:`attacks.batched_adam`).

A "gradient evaluation" is one evaluation of an attack's objective with its gradient
with respect to the dummy variables; for a FedAvg update it unrolls every local step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.client import local_sgd, minibatches, set_bn_mode, training_loss
from bench.contracts import ClientSpec, Observation


def dummy_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   obs: Observation) -> list[torch.Tensor]:
    """The FedSGD gradient of the dummy batch, differentiable with respect to ``x``/``target``."""
    set_bn_mode(model, obs.client.bn_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = training_loss(model(x), target)
    return list(torch.autograd.grad(loss, params, create_graph=True))


def unrolled_delta(model: nn.Module, x: torch.Tensor, target: torch.Tensor, client: ClientSpec
                   ) -> list[torch.Tensor]:
    """The FedAvg delta θ_E − θ_0 of the dummy batch, differentiable w.r.t. ``x``/``target``.

    Dimitrov et al. 2022 ("Data leakage in federated averaging"): simulate the client's
    local SGD with ``create_graph`` so the attacker can differentiate the resulting delta.
    It is the client's own loop, :func:`bench.client.local_sgd`, unrolled.
    """
    return local_sgd(model, x, target, client, unroll=True).delta


def dummy_update(model: nn.Module, x: torch.Tensor, target: torch.Tensor, obs: Observation
                 ) -> list[torch.Tensor]:
    """The dummy batch's counterpart of ``obs.update``: a gradient, or an unrolled FedAvg delta.

    On a K-client secure aggregate the dummy batch holds K·B samples: it is split into the K
    clients' batches of B, each client's update is simulated on its own (BatchNorm in train
    mode normalises each client's batch; FedAvg unrolls each client's local steps), and they
    are combined as the server observes them (mean or sum), which the protocol makes public.
    """
    if obs.clients == 1:
        return _client_update(model, x, target, obs)
    b = obs.client_batch_size
    parts = [_client_update(model, xc, tc, obs) for xc, tc in zip(x.split(b), target.split(b))]
    return [torch.stack(ts).sum(0) * obs.aggregate_scale for ts in zip(*parts)]


def _client_update(model: nn.Module, x: torch.Tensor, target: torch.Tensor, obs: Observation
                   ) -> list[torch.Tensor]:
    if obs.update.kind == "delta":
        return unrolled_delta(model, x, target, obs.client)
    if obs.update.kind == "gradient":
        return dummy_gradient(model, x, target, obs)
    raise ValueError(f"unknown update kind {obs.update.kind!r}")


def local_steps(client: ClientSpec, batch_size: int) -> int:
    """How many SGD steps a client with ``batch_size`` samples takes locally (1 for FedSGD).

    On an aggregate pass each client's batch (``obs.client_batch_size``), not K·B."""
    if client.mode != "fedavg":
        return 1
    return len(minibatches(batch_size, client))


def l2_distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's objective: the summed squared L2 distance over all parameter tensors, taken
    over their concatenation (one subtraction, square and sum, however many tensors: the
    objective is evaluated thousands of times on small networks, where per-operation
    overhead dominates)."""
    flat_d = torch.cat([d.reshape(-1) for d in dummy])
    flat_o = torch.cat([o.reshape(-1) for o in observed])
    return (flat_d - flat_o).square().sum()


def cosine_distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]
                    ) -> torch.Tensor:
    """Inverting Gradients' objective: 1 − cosine similarity of all gradients concatenated.
    The dummy's squared norm is floored at 1e-30 before its root: a bias-free network's
    gradient at a zero input is zero, where sqrt's derivative (inf × 0) made the objective's
    gradient NaN; above the floor nothing changes."""
    dot = sum((d * o).sum() for d, o in zip(dummy, observed))
    dn = sum((d * d).sum() for d in dummy)
    on = sum((o * o).sum() for o in observed)
    return 1 - dot / (dn.clamp_min(1e-30).sqrt() * on.sqrt() + 1e-12)


@dataclass
class SearchResult:
    """The outcome of :func:`run_signed_adam`: the best restart's images and the total cost."""

    images: torch.Tensor
    iterations: int = 0  # optimiser steps, summed over restarts
    grad_evals: int = 0  # objective evaluations, summed over restarts (scoring included)
    loss_trace: list[float] = field(default_factory=list)
    diverged: bool = False
    final_loss: float = float("inf")
    restart_losses: list[float] = field(default_factory=list)
    best_restart: int = 0
    restarts: int = 1
    iterations_per_restart: int = 0


def plan_budget(restarts: int, iterations: int, max_iterations: int | None,
                max_grad_evals: int | None) -> tuple[int, int]:
    """(restarts, iterations per restart) that fit the suite's caps.

    Each restart costs ``iterations`` steps and ``iterations + 1`` objective evaluations
    (the last one scores it). A cap is shared evenly between restarts; when it cannot
    afford one step per restart, fewer restarts run.
    """
    def per_restart(r: int) -> int:
        n = iterations
        if max_iterations is not None:
            n = min(n, max_iterations // r)
        if max_grad_evals is not None:
            n = min(n, max_grad_evals // r - 1)
        return n

    r = restarts
    while r > 1 and per_restart(r) < 1:
        r -= 1
    return r, max(0, per_restart(r))


def step_decay_lr(lr: float, iteration: int, iterations: int, decay: bool) -> float:
    """Inverting Gradients' schedule: ×0.1 at 3/8, 5/8 and 7/8 of the iterations."""
    if not decay:
        return lr
    milestones = (int(iterations * 3 / 8), int(iterations * 5 / 8), int(iterations * 7 / 8))
    return lr * 0.1 ** sum(iteration >= m for m in milestones)


def run_signed_adam(starts: list[torch.Tensor], objective: Callable[[torch.Tensor], torch.Tensor],
                    iterations: int, lr: float = 0.1, signed: bool = True,
                    lr_decay: bool = True, box: tuple[torch.Tensor, torch.Tensor] | None = None,
                    score: Callable[[torch.Tensor], torch.Tensor] | None = None,
                    group: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor] | None = None,
                    trace_every: int = 10) -> SearchResult:
    """Inverting Gradients' optimiser over several restarts, run in lock-step.

    Each restart r holds dummy images ``starts[r]``. Every iteration evaluates
    ``objective(x_r)`` (+ ``group(x_r, live x)`` when given: GradInversion's group
    consistency over the restarts that have not diverged, which is why restarts advance
    together), replaces the gradient by its
    sign when ``signed`` (Geiping et al. 2020), takes an Adam step at the step-decay
    learning rate and projects each image into ``box`` (the valid pixel range). A
    restart whose loss or image becomes non-finite stops and is left out of the ranking.
    At the end every live restart is scored by ``score`` (default: ``objective``), the
    attack's own loss, and the lowest wins; ``diverged`` is set only if every restart
    diverged.
    """
    xs = [s.detach().clone().requires_grad_(True) for s in starts]
    alive = [True] * len(xs)
    opt = torch.optim.Adam(xs, lr=lr)
    res = SearchResult(images=xs[0].detach(), restarts=len(xs), iterations_per_restart=iterations)
    for it in range(iterations):
        for pg in opt.param_groups:
            pg["lr"] = step_decay_lr(lr, it, iterations, lr_decay)
        losses = []
        live = [x for x, a in zip(xs, alive) if a]  # a diverged restart leaves the group
        for r, x in enumerate(xs):
            x.grad = None
            if not alive[r]:
                continue
            loss = objective(x)
            if group is not None and len(live) > 1:
                loss = loss + group(x, live)
            res.grad_evals += 1
            res.iterations += 1
            (g,) = torch.autograd.grad(loss, x)
            if not torch.isfinite(loss) or not torch.isfinite(g).all():
                alive[r] = False
                continue
            x.grad = g.sign() if signed else g
            losses.append(float(loss.detach()))
        if not any(alive):
            break
        opt.step()
        if box is not None:
            with torch.no_grad():
                for x in xs:
                    x.copy_(torch.clamp(x, box[0], box[1]))
        if losses and (it % trace_every == 0 or it == iterations - 1):
            res.loss_trace.append(min(losses))
    score = score or objective
    finals = []
    for r, x in enumerate(xs):
        value = math.inf
        if alive[r] and torch.isfinite(x).all():
            with torch.enable_grad():
                value = float(score(x.detach()).detach())
            res.grad_evals += 1
        finals.append(value if math.isfinite(value) else math.inf)
    res.restart_losses = finals
    if all(math.isinf(v) for v in finals):
        res.diverged = True
        res.images = xs[0].detach()
        return res
    best = min(range(len(xs)), key=lambda r: finals[r])
    res.best_restart, res.final_loss, res.images = best, finals[best], xs[best].detach()
    return res
