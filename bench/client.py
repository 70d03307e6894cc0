"""The client: computes its update on the private batch (FedSGD gradient or FedAvg delta).

:func:`local_sgd` is FedAvg's local training, written once for the client, DP-SGD's noisy
steps and the attacks' differentiable unroll.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from bench.contracts import ClientSpec, Update


def training_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The client's loss: mean cross-entropy, or the logistic loss for a single-logit model.

    ``target`` holds class indices (B) or soft-label rows (B×K). A model with one output
    (R-GAP's CNN6 and FCN3) is trained with the logistic loss log(1 + e^(−y·μ)) on the
    label's parity: y = +1 for an even class, −1 for an odd one (soft rows: the summed
    probability of the even classes).

    A language model's logits are per position (B×L×V) and its target holds the next token
    at every position (B×L, or soft rows B×L×V): the mean cross-entropy over positions.
    """
    if logits.dim() == 3:
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(0, 1))
    if logits.shape[-1] == 1:
        if target.dim() == 1:
            positive = (target % 2 == 0).to(logits.dtype)
        else:
            positive = target[:, 0::2].sum(dim=1).to(logits.dtype)
        return F.binary_cross_entropy_with_logits(logits[:, 0], positive)
    return F.cross_entropy(logits, target)


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def set_bn_mode(model: nn.Module, mode: str) -> None:
    """Put the model in train mode, with BatchNorm layers in ``mode`` ("train" or "eval")."""
    model.train()
    if mode == "eval":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def batch_norm_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the (mean, variance) of the batch that reaches it."""
    stats: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module, inputs, output):
        h = inputs[0].detach()
        dims = [0] + list(range(2, h.dim()))
        stats.append((h.mean(dims), h.var(dims, unbiased=False)))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return stats


def pooled_bn_stats(stats: Sequence[Sequence[tuple[torch.Tensor, torch.Tensor]]]
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the mean and (biased) variance of the union of equal-size batches,
    from each batch's: the statistics a secure aggregate of clients reports."""
    pooled = []
    for layer in zip(*stats):
        means = torch.stack([m for m, _ in layer])
        variances = torch.stack([v for _, v in layer])
        mean = means.mean(0)
        pooled.append((mean, variances.mean(0) + ((means - mean) ** 2).mean(0)))
    return pooled


StepGradient = Callable[[nn.Module, torch.Tensor, torch.Tensor], Sequence[torch.Tensor]]
"""A local step's gradient at the model's current weights, given one mini-batch (x, target)."""


def minibatches(n: int, spec: ClientSpec) -> list[slice]:
    """FedAvg's local schedule: ``local_epochs`` passes over the batch, in order, in mini-batches
    of ``local_batch_size`` (0: the whole batch), one slice per SGD step."""
    step = spec.local_batch_size or n
    return [slice(start, start + step) for _ in range(spec.local_epochs)
            for start in range(0, n, step)]


@dataclass
class LocalTraining:
    """The outcome of :func:`local_sgd`: the weight delta θ_E − θ_0 and the last step's loss."""

    delta: list[torch.Tensor]
    loss: torch.Tensor | None  # None when a ``step_gradient`` hook computed the gradients


def local_sgd(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: ClientSpec, *,
              unroll: bool = False, step_gradient: StepGradient | None = None) -> LocalTraining:
    """The client's local SGD (McMahan et al. 2017, FedAvg): every step of :func:`minibatches`
    moves the trainable weights by −lr × the step's gradient, BatchNorm in ``spec.bn_mode``.

    The one loop the client, DP-SGD and the attacks share:

    - default: a copy of ``model`` is trained in place (``model`` is left unchanged) and the
      delta is detached;
    - ``unroll=True`` (attacks, Dimitrov et al. 2022): the steps are taken functionally on
      ``model``'s weights with ``create_graph``, so the delta is differentiable with respect
      to ``x``/``target``; it is accumulated as −lr·Σ gradients rather than subtracted at the
      end, which avoids cancellation. ``model``'s BatchNorm buffers move as the client's do;
    - ``step_gradient`` replaces the gradient of :func:`training_loss` (DP-SGD plugs in its
      clipped, noised per-step gradient); it is called on the model at its current weights,
      and is not available with ``unroll``.
    """
    if unroll and step_gradient is not None:
        raise ValueError("local_sgd: a step_gradient hook cannot be unrolled")
    work = model if unroll else copy.deepcopy(model)
    set_bn_mode(work, spec.bn_mode)
    named = [(n, p) for n, p in work.named_parameters() if p.requires_grad]
    names, weights = [n for n, _ in named], [p for _, p in named]
    shift = [torch.zeros_like(p) for p in weights] if unroll else []  # the delta so far
    loss = None
    for part in minibatches(len(x), spec):
        xb, tb = x[part], target[part]
        if step_gradient is not None:
            grads = list(step_gradient(work, xb, tb))
        elif unroll:
            current = [p + s for p, s in zip(weights, shift)]
            loss = training_loss(functional_call(work, dict(zip(names, current)), (xb,)), tb)
            grads = list(torch.autograd.grad(loss, current, create_graph=True))
        else:
            loss = training_loss(work(xb), tb)
            grads = list(torch.autograd.grad(loss, weights))
        if unroll:
            shift = [s - spec.lr * g for s, g in zip(shift, grads)]
        else:
            with torch.no_grad():
                for p, g in zip(weights, grads):
                    p -= spec.lr * g
    if unroll:
        return LocalTraining(shift, loss)
    origin = [p for p in model.parameters() if p.requires_grad]
    return LocalTraining([(p - p0).detach() for p, p0 in zip(weights, origin)], loss)


def compute_update(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   spec: ClientSpec) -> Update:
    """The update the client would send for ``(x, target)``; ``model`` is left unchanged."""
    has_bn = has_batchnorm(model)
    bn_stats = None
    if has_bn:
        snapshot = copy.deepcopy(model)
        set_bn_mode(snapshot, spec.bn_mode)
        bn_stats = batch_norm_inputs(snapshot, x)
    if spec.mode == "fedsgd":
        work = copy.deepcopy(model) if has_bn else model  # BN in train mode moves running stats
        set_bn_mode(work, spec.bn_mode)
        work_params = [p for p in work.parameters() if p.requires_grad]
        loss = training_loss(work(x), target)
        grads = torch.autograd.grad(loss, work_params)
        info = {"loss": float(loss.detach())}
        return Update([g.detach() for g in grads], "gradient", bn_stats, info)
    if spec.mode == "fedavg":
        local = local_sgd(model, x, target, spec)
        assert local.loss is not None  # no step_gradient hook: the loss is known
        return Update(local.delta, "delta", bn_stats, {"loss": float(local.loss.detach())})
    raise ValueError(f"unknown client mode {spec.mode!r}")
