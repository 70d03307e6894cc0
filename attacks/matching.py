"""Gradient matching: the objective and optimiser loop shared by the optimisation attacks.

An optimisation attack is configuration over this loop: which distance between the
dummy batch's gradient and the observed one, which priors, which optimiser. The
loop counts every gradient evaluation (an L-BFGS step costs up to 20) and stops on
a non-finite loss, which the harness then records as a diverged run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from bench.client import set_bn_mode, training_loss
from bench.contracts import Observation


def dummy_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   obs: Observation) -> list[torch.Tensor]:
    """The FedSGD gradient of the dummy batch, differentiable with respect to ``x``/``target``."""
    set_bn_mode(model, obs.client.bn_mode)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = training_loss(model(x), target)
    return list(torch.autograd.grad(loss, params, create_graph=True))


def l2_distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]) -> torch.Tensor:
    """DLG's objective: the summed squared L2 distance over all parameter tensors."""
    return sum(((d - o) ** 2).sum() for d, o in zip(dummy, observed))


def cosine_distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]
                    ) -> torch.Tensor:
    """Inverting Gradients' objective: 1 − cosine similarity of all gradients concatenated."""
    dot = sum((d * o).sum() for d, o in zip(dummy, observed))
    dn = sum((d * d).sum() for d in dummy)
    on = sum((o * o).sum() for o in observed)
    return 1 - dot / (dn.sqrt() * on.sqrt() + 1e-12)


@dataclass
class LoopResult:
    iterations: int = 0
    grad_evals: int = 0
    loss_trace: list[float] = field(default_factory=list)
    diverged: bool = False
    final_loss: float = float("inf")


def run_lbfgs(variables: list[torch.Tensor], objective: Callable[[], torch.Tensor], steps: int,
              lr: float = 1.0, max_eval_per_step: int = 20, history_size: int = 100,
              max_grad_evals: int | None = None, trace_every: int = 10) -> LoopResult:
    """Minimise ``objective`` over ``variables`` with torch's L-BFGS, as DLG does."""
    opt = torch.optim.LBFGS(variables, lr=lr, max_iter=max_eval_per_step,
                            history_size=history_size)
    res = LoopResult()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective()
        loss.backward()
        res.grad_evals += 1
        return loss

    for step in range(steps):
        if max_grad_evals is not None and res.grad_evals >= max_grad_evals:
            break
        loss = opt.step(closure)
        res.iterations = step + 1
        value = float(loss.detach())
        if step % trace_every == 0 or step == steps - 1:
            res.loss_trace.append(value)
        if not torch.isfinite(loss) or not all(torch.isfinite(v).all() for v in variables):
            res.diverged = True
            break
        res.final_loss = value
        if value == 0.0:  # an exact match: L-BFGS can make no further progress
            break
    return res
