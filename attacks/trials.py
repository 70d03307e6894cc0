"""Batched trials: K independent gradient-matching problems evaluated in one vectorised pass.

A trial is one reconstruction problem: one observation (its victim weights, its observed
update, its labels) and one dummy batch. K seeds of a scenario, K restarts of one cell, or
one scenario under K defenses are K trials. :class:`TrialEngine` stacks the trials' weights
and observed updates along a leading trial dimension and evaluates every trial's objective
with ``torch.func.vmap`` over a functional client update (``functional_call`` plus
``torch.func.grad``; FedAvg's local SGD unrolled the same way, Dimitrov et al. 2022). Each
trial's loss depends on its own slice only, so the gradient of the summed losses with respect
to the stacked dummies is every trial's own gradient: trials stay independent, and one trial's
NaN cannot reach another.

Why: one small-network trial is dominated by per-operation overhead; vectorising K of them
amortises that overhead (see the README's batched-trials benchmark).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch.func import functional_call, grad, vmap

from attacks.batch_stats_norm import use_batch_statistics
from bench.client import minibatches, set_bn_mode, training_loss
from bench.contracts import ClientSpec, Observation

Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
Prior = Callable[[torch.Tensor], torch.Tensor]


class TrialsIncompatible(ValueError):
    """The observations cannot share one vectorised pass (different models or protocols)."""


def _signature(obs: Observation) -> tuple:
    shapes = tuple((n, tuple(p.shape), p.requires_grad) for n, p in obs.model.named_parameters())
    update = tuple((tuple(t.shape), t.dtype) for t in obs.update.tensors)
    return (type(obs.model), shapes, update, obs.update.kind, obs.client, obs.batch_size,
            obs.clients, obs.num_classes, obs.input_shape, str(obs.device), obs.aggregate_scale)


class TrialEngine:
    """The stacked state of K trials and their vectorised dummy updates.

    ``observations[i]`` is trial i's view; ``cell_of[j]`` (default: identity) maps trial j to
    the observation it attacks, so R restarts of C cells are C·R trials over C observations.
    """

    def __init__(self, observations: Sequence[Observation],
                 cell_of: Sequence[int] | None = None) -> None:
        if not observations:
            raise TrialsIncompatible("no observations")
        first = _signature(observations[0])
        for o in observations[1:]:
            if _signature(o) != first:
                raise TrialsIncompatible("the observations differ in model, client or batch")
        self.cell_of = list(cell_of) if cell_of is not None else list(range(len(observations)))
        obs0 = observations[0]
        self.client: ClientSpec = obs0.client
        self.kind = obs0.update.kind
        self.clients, self.scale = obs0.clients, obs0.aggregate_scale
        self.device = obs0.device
        base = copy.deepcopy(obs0.model).to(self.device)
        set_bn_mode(base, self.client.bn_mode)
        if self.client.bn_mode == "train":  # batch statistics only: no buffers to move, and
            use_batch_statistics(base)      # BatchNorm that vmap differentiates correctly
        self.base = base
        self.names = [n for n, p in base.named_parameters() if p.requires_grad]
        index = torch.as_tensor(self.cell_of, device=self.device)
        trainable = set(self.names)
        state_names = [n for n, _ in base.named_parameters() if n not in trainable]
        state_names += [n for n, b in base.named_buffers() if b is not None]

        tensors = [{**dict(o.model.named_parameters()), **dict(o.model.named_buffers())}
                   for o in observations]

        def stacked(name: str) -> torch.Tensor:
            return torch.stack([t[name].detach().to(self.device)
                                for t in tensors]).index_select(0, index)

        self.params = {n: stacked(n) for n in self.names}
        own = dict(base.named_parameters())
        # a lone trial's leaves: the base model's own parameters, run without functional_call
        # (its buffers are ``state``'s row 0 too); the stacked tensors are never changed after
        # construction, or this copy would go stale
        self._own = {n: own[n] for n in self.names}
        self.state = {n: stacked(n) for n in state_names}
        self.observed = [torch.stack([o.update.tensors[i].detach().to(self.device)
                                      for o in observations]).index_select(0, index)
                         for i in range(len(self.names))]
        self._state0 = {n: v[0] for n, v in self.state.items()}  # a lone trial's rows
        self._observed0 = [o[0] for o in self.observed]
        self._selected: tuple[tuple[int, ...], dict[str, torch.Tensor],
                              dict[str, torch.Tensor], list[torch.Tensor]] | None = None

    @property
    def trials(self) -> int:
        return len(self.cell_of)

    # -- one trial, functional ------------------------------------------------------------------

    def _gradient(self, params: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                  x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
            if p is self._own:  # the base model's own tensors: no swapping them in
                return training_loss(self.base(x), target)
            return training_loss(functional_call(self.base, (p, state), (x,)), target)

        if self.trials == 1:  # not under vmap: plain autograd is faster than torch.func
            names = list(params)
            grads = torch.autograd.grad(loss(params), [params[n] for n in names],
                                        create_graph=True)
            return dict(zip(names, grads))
        return grad(loss)(params)

    def _client_update(self, params: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                       x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        if self.kind == "gradient":
            g = self._gradient(params, state, x, target)
            return [g[n] for n in self.names]
        if self.kind != "delta":
            raise ValueError(f"unknown update kind {self.kind!r}")
        shift = {n: torch.zeros_like(p) for n, p in params.items()}  # −lr·Σ gradients
        for part in minibatches(len(x), self.client):
            current = {n: params[n] + shift[n] for n in self.names}
            g = self._gradient(current, state, x[part], target[part])
            shift = {n: shift[n] - self.client.lr * g[n] for n in self.names}
        return [shift[n] for n in self.names]

    def _update(self, params: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
        """One trial's dummy counterpart of its observed update (aggregated over K clients)."""
        if self.clients == 1:
            return self._client_update(params, state, x, target)
        b = len(x) // self.clients
        parts = [self._client_update(params, state, xc, tc)
                 for xc, tc in zip(x.split(b), target.split(b))]
        return [torch.stack(ts).sum(0) * self.scale for ts in zip(*parts)]

    # -- all trials ------------------------------------------------------------------------------

    def _rows(self, rows: Sequence[int]) -> tuple[dict[str, torch.Tensor],
                                                  dict[str, torch.Tensor], list[torch.Tensor]]:
        """The stacked weights, state and observed updates of trials ``rows`` (the last
        selection is kept: a pass selects anew only when a trial stops)."""
        key = tuple(rows)
        if self._selected is None or self._selected[0] != key:
            ix = torch.as_tensor(key, device=self.device)
            self._selected = (key, {n: v.index_select(0, ix) for n, v in self.params.items()},
                              {n: v.index_select(0, ix) for n, v in self.state.items()},
                              [o.index_select(0, ix) for o in self.observed])
        return self._selected[1:]

    def losses(self, distance: Distance, x: torch.Tensor, target: torch.Tensor,
               priors: Sequence[Prior] = (), rows: Sequence[int] | None = None
               ) -> torch.Tensor:
        """Every trial's objective, shape [K]: ``distance(dummy update, observed)`` plus the
        priors of its own dummy batch. ``x`` is [K, B, ...]; ``target`` [K, B] class indices or
        [K, B, classes] soft labels. With ``rows``, only those trials' (``x`` and ``target``
        then hold their rows): the losses of the trials still running."""

        def one(params: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                observed: list[torch.Tensor], xk: torch.Tensor, tk: torch.Tensor
                ) -> torch.Tensor:
            loss = distance(self._update(params, state, xk, tk), observed)
            for prior in priors:
                loss = loss + prior(xk)
            return loss

        if rows is not None and list(rows) != list(range(self.trials)):
            return vmap(one)(*self._rows(rows), x, target)
        if self.trials == 1:  # the same function, without vmap's overhead, on the base
            # model's own parameters (the trial's: ``base`` is a copy of its model)
            leaves = self._own if self.cell_of == [0] else {
                n: v[0].detach().requires_grad_(True) for n, v in self.params.items()}
            loss = one(leaves, self._state0, self._observed0, x[0], target[0])
            return loss.unsqueeze(0)
        return vmap(one)(self.params, self.state, self.observed, x, target)


def trials_of(cell_of: Sequence[int], cells: int) -> list[list[int]]:
    """The trial indices of each cell, in trial order."""
    out: list[list[int]] = [[] for _ in range(cells)]
    for j, c in enumerate(cell_of):
        out[c].append(j)
    return out
