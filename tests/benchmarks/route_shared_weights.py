"""A route measured for issue #12's CPU targets, and not built: trials that share one model.

Restarts of one cell, or one scenario under K update-level defenses, attack one model, so
their trials need not each carry its weights. Times DLG's objective and its gradient (LeNet
with sigmoids, one 32×32 image per trial, soft labels, 60 evaluations, min of 2 rounds) for
K = 1, 8 and 32 trials three ways: each trial its own weights under ``vmap`` (as the engine
stacks them), shared weights under ``vmap`` (``in_dims=None``), and shared weights by hand
(batched convolutions, each trial's weight gradient by ``F.unfold`` and a batched matrix
product, autograd for the second order). The figures are in results/benchmark-history.md.

Run: ``python tests/benchmarks/route_shared_weights.py THREADS`` (not collected by pytest).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

STRIDES = (2, 2, 1)


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 12, 5, 2, 2), nn.Sigmoid(),
                                  nn.Conv2d(12, 12, 5, 2, 2), nn.Sigmoid(),
                                  nn.Conv2d(12, 12, 5, 1, 2), nn.Sigmoid())
        self.fc = nn.Linear(768, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).flatten(1))


def timed(step: Callable[[], object], evals: int = 60) -> float:
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        for _ in range(evals):
            step()
        best = min(best, time.perf_counter() - t0)
    return best


def with_vmap(model: LeNet, k: int, shared: bool) -> float:
    params = {n: p.detach() for n, p in model.named_parameters()}

    def objective(p, observed, x, t):
        def loss(q):
            out = functional_call(model, q, (x,))
            return -(t.softmax(-1) * out.log_softmax(-1)).sum()

        g = grad(loss)(p)
        return sum(((g[n] - observed[n]) ** 2).sum() for n in g)

    x = torch.randn(k, 1, 3, 32, 32, requires_grad=True)
    t = torch.randn(k, 1, 10, requires_grad=True)
    observed = {n: torch.randn(k, *v.shape) for n, v in params.items()}
    if shared:
        batched, p = vmap(objective, in_dims=(None, 0, 0, 0)), params
    else:
        batched = vmap(objective)
        p = {n: v.expand(k, *v.shape).clone() for n, v in params.items()}
    return timed(lambda: torch.autograd.grad(batched(p, observed, x, t).sum(), [x, t]))


def per_trial_gradients(model: LeNet, x: torch.Tensor, t: torch.Tensor) -> list[torch.Tensor]:
    """Each trial's parameter gradient, differentiable in ``x`` and ``t``, with the shared
    weights' passes batched over the trials."""
    convs = [model.body[0], model.body[2], model.body[4]]
    weights = [c.weight.detach() for c in convs]
    acts, h = [x], x
    for conv, w, s in zip(convs, weights, STRIDES):
        h = torch.sigmoid(F.conv2d(h, w, conv.bias.detach(), stride=s, padding=2))
        acts.append(h)
    k = len(x)
    flat = h.reshape(k, -1)
    fc_w = model.fc.weight.detach()
    dout = (flat @ fc_w.T + model.fc.bias.detach()).softmax(-1) - t.softmax(-1)
    grads: list[torch.Tensor] = [dout] * 8
    grads[6], grads[7] = dout[:, :, None] * flat[:, None, :], dout
    d = (dout @ fc_w).reshape(h.shape)
    for i in (2, 1, 0):
        dz = d * acts[i + 1] * (1 - acts[i + 1])
        cols = F.unfold(acts[i], 5, padding=2, stride=STRIDES[i])
        grads[2 * i] = torch.bmm(dz.reshape(k, dz.shape[1], -1),
                                 cols.transpose(1, 2)).reshape(k, *weights[i].shape)
        grads[2 * i + 1] = dz.sum((2, 3))
        if i:
            d = torch.nn.grad.conv2d_input(acts[i].shape, weights[i], dz, stride=STRIDES[i],
                                           padding=2)
    return grads


def by_hand(model: LeNet, k: int) -> float:
    x = torch.randn(k, 3, 32, 32, requires_grad=True)
    t = torch.randn(k, 10, requires_grad=True)
    observed = [torch.randn(g.shape) for g in per_trial_gradients(model, x.detach(), t.detach())]

    def step() -> None:
        grads = per_trial_gradients(model, x, t)
        torch.autograd.grad(sum(((g - o) ** 2).sum() for g, o in zip(grads, observed)), [x, t])

    return timed(step)


def main(threads: int) -> None:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = LeNet()
    routes = {"own weights, vmap": lambda k: with_vmap(model, k, False),
              "shared weights, vmap": lambda k: with_vmap(model, k, True),
              "shared weights, by hand": lambda k: by_hand(model, k)}
    for name, seconds in routes.items():
        one, eight, many = seconds(1), seconds(8), seconds(32)
        print(f"threads {threads} | {name}: K = 1 / 8 / 32: {one:.3f} / {eight:.3f} / "
              f"{many:.3f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
