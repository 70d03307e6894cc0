"""One evaluation of a batched L-BFGS pass: the running trials' losses and gradients.

:mod:`attacks.batched_lbfgs` evaluates its K trials together. Once some have stopped, an
objective that can take a subset of the trials (``rows_objective``) is given only the running
ones, so a pass whose trials converge at different times costs less as they do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

Objective = Callable[[Sequence[torch.Tensor]], torch.Tensor]
RowsObjective = Callable[[Sequence[torch.Tensor], list[int]], torch.Tensor]


def evaluate_trials(variables: Sequence[torch.Tensor], objective: Objective,
                    rows_objective: RowsObjective | None, running: list[int],
                    like: torch.Tensor) -> tuple[list[float], torch.Tensor]:
    """The K trials' losses and flattened gradients ``[K, n]`` (``like``'s shape and dtype):
    every row through ``objective(variables)``, or, when some trials have stopped and
    ``rows_objective`` is given, the ``running`` rows through ``rows_objective(their rows,
    running)`` (the stopped rows' loss NaN, gradient 0: nobody reads them)."""
    k_trials = like.shape[0]
    sizes = [v[0].numel() for v in variables]
    subset = rows_objective is not None and len(running) < k_trials
    if subset:
        ix = torch.tensor(running, device=like.device)
        inputs = [v.detach().index_select(0, ix).requires_grad_(True) for v in variables]
    else:
        inputs = list(variables)
    n_rows = len(running) if subset else k_trials
    with torch.enable_grad():
        losses = rows_objective(inputs, running) if subset else objective(inputs)
        if losses.shape != (n_rows,):
            raise ValueError(f"objective must return shape ({n_rows},), "
                             f"got {tuple(losses.shape)}")
        grads = torch.autograd.grad(losses.sum(), inputs, allow_unused=True)
    flat = torch.cat([torch.zeros(n_rows, s, dtype=like.dtype, device=like.device)
                      if gr is None else gr.reshape(n_rows, -1) for gr, s in zip(grads, sizes)], 1)
    if not subset:
        return losses.detach().tolist(), flat
    full = [math.nan] * k_trials
    for k, f in zip(running, losses.detach().tolist()):
        full[k] = f
    return full, torch.zeros_like(like).index_copy_(0, ix, flat)
