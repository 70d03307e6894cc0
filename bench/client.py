"""The client: computes its update on the private batch (FedSGD gradient or FedAvg delta)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from bench.contracts import ClientSpec, Update


def training_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The client's loss: mean cross-entropy, or the logistic loss for a single-logit model.

    ``target`` holds class indices (B) or soft-label rows (B×K). A model with one output
    (R-GAP's CNN6 and FCN3) is trained with the logistic loss log(1 + e^(−y·μ)) on the
    label's parity: y = +1 for an even class, −1 for an odd one (soft rows: the summed
    probability of the even classes).
    """
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


def compute_update(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                   spec: ClientSpec) -> Update:
    """The update the client would send for ``(x, target)``; ``model`` is left unchanged."""
    params = [p for p in model.parameters() if p.requires_grad]
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
        local = copy.deepcopy(model)
        set_bn_mode(local, spec.bn_mode)
        local_params = [p for p in local.parameters() if p.requires_grad]
        step = spec.local_batch_size or len(x)
        for _ in range(spec.local_epochs):
            for start in range(0, len(x), step):
                loss = training_loss(local(x[start:start + step]), target[start:start + step])
                grads = torch.autograd.grad(loss, local_params)
                with torch.no_grad():
                    for p, g in zip(local_params, grads):
                        p -= spec.lr * g
        delta = [(lp - p).detach() for lp, p in zip(local_params, params)]
        return Update(delta, "delta", bn_stats, {"loss": float(loss.detach())})
    raise ValueError(f"unknown client mode {spec.mode!r}")
