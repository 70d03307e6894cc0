"""Soteria (Sun et al., CVPR 2021): prune the representation layer's gradient by its criterion.

The representation r is the input of the model's last linear layer (flattened features).
The gradient of that layer's weight is δ·rᵀ, so its column f carries feature r_f, from
which an attack can read the input. For every feature Soteria scores how little the input
has to move to change it, through the authors' approximation of ‖r_f (∂r_f/∂x)⁻¹‖:

    score_f = Σ_b ‖∂r_{b,f}/∂x_b‖₂ / (r_{b,f} + offset)

(summed over the batch; the backward pass is of Σ_b r_{b,f}, as in the reference code).
Features whose score is smallest in **magnitude**, those with the largest |r|/‖∂r/∂x‖,
reveal the input most; their columns of the last layer's weight gradient are zeroed. The
reference code (github.com/jeremy313/Soteria, ``reconstruct_image.py`` and the DLG
notebook) masks ``abs(score) < threshold``: a feature with a large negative score (a
negative r_f, as LeakyReLU, tanh or an affine representation give) is as far from the
input as a large positive one and is kept, where ranking the signed scores would prune it
first. With ReLU features and offset > 0 every score is positive and the two agree. A
feature with a non-finite score (r_f + offset = 0) is kept, as the reference's comparison
does. Every other tensor of the update is left as it is. The criterion is computed on the
model the client starts from and on the batch it trains on, so it applies to FedSGD
gradients and to FedAvg deltas alike. The reference takes its threshold as a percentile;
here exactly ⌊ratio·F⌋ of the F features are pruned. ``offset`` is 0.1 in the authors'
Inverting-Gradients experiments (0 in their DLG notebook): it keeps the score finite for
features at 0, such as ReLU's.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bench.client import set_bn_mode
from bench.contracts import CellContext, Defense, DefenseContext, Update
from bench.registry import Param, register_defense

CHUNK = 256  # features per batched backward pass


def last_linear_index(model: nn.Module) -> tuple[int, nn.Linear]:
    """Position of the last linear layer's weight among the trainable parameters, and the layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear layer: no representation layer to prune")
    layer = linears[-1]
    trainable = [p for p in model.parameters() if p.requires_grad]
    for i, p in enumerate(trainable):
        if p is layer.weight:
            return i, layer
    raise ValueError("the last linear layer's weight is not trainable")


def representation_and_input(model: nn.Module, x: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """The representation r (B×F, differentiable) and the input x it was computed from."""
    _, layer = last_linear_index(model)
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
    x = x.detach().clone().requires_grad_(True)
    try:
        model(x)
    finally:
        handle.remove()
    r = captured[-1]
    if r.dim() != 2:
        raise ValueError(f"soteria expects the last linear layer's input to be B×F, got "
                         f"{tuple(r.shape)}")
    return r, x


def soteria_scores(model: nn.Module, x: torch.Tensor, offset: float = 0.1,
                   bn_mode: str = "train") -> torch.Tensor:
    """Per feature f of the representation: Σ_b ‖∂r_{b,f}/∂x_b‖ / (r_{b,f} + offset) (F)."""
    work = copy.deepcopy(model)  # BatchNorm in train mode would move the running statistics
    set_bn_mode(work, bn_mode)
    r, xin = representation_and_input(work, x)
    b, f = r.shape
    jac_norms = torch.empty(b, f, dtype=r.dtype, device=r.device)
    for start in range(0, f, CHUNK):
        n = min(CHUNK, f - start)
        seeds = torch.zeros(n, b, f, dtype=r.dtype, device=r.device)
        seeds[torch.arange(n), :, start + torch.arange(n)] = 1.0  # one feature, every sample
        try:
            (g,) = torch.autograd.grad(r, xin, seeds, retain_graph=True, is_grads_batched=True)
        except torch.cuda.OutOfMemoryError:  # a RuntimeError too: the loop below is no cure
            raise
        except RuntimeError:  # an op without a batching rule: one backward pass per feature
            g = torch.stack([torch.autograd.grad(r, xin, s, retain_graph=True)[0]
                             for s in seeds])
        jac_norms[:, start:start + n] = g.flatten(2).norm(dim=2).T
    return (jac_norms / (r.detach() + offset)).sum(0)


def pruned_features(scores: torch.Tensor, ratio: float) -> torch.Tensor:
    """Indices of the ⌊ratio·F⌋ features with the smallest |score| (the reference masks
    ``abs(score) < threshold``); non-finite scores rank last."""
    n = math.floor(round(ratio * scores.numel(), 6))  # robust to float noise, as prune
    magnitude = scores.abs().nan_to_num(nan=math.inf)
    return torch.argsort(magnitude, stable=True)[:n]


@register_defense("soteria")
class Soteria(Defense):
    """Zero the last linear layer's weight-gradient columns of the most revealing features
    (smallest |score|)."""

    modalities = frozenset({"image"})  # ranks the features of an image's representation
    reads_batch = True  # its mask comes from the client's own images
    paper = ("Sun, Li, Wang, Chen, Li, Chen. Soteria: Provable Defense against Privacy Leakage "
             "in Federated Learning from Representation Perspective. CVPR 2021")
    params = (
        Param("ratio", float, 0.6, low=0.0, high=1.0,
              help="fraction of the representation's features pruned (the paper's pruning rate "
                   "/ 100); only the last linear layer's weight is touched"),
        Param("offset", float, 0.1, low=0.0,
              help="added to r_f in the score's denominator (reference: 0.1 for Inverting "
                   "Gradients, 0 for DLG)"),
    )

    def incompatibility(self, ctx: CellContext) -> str | None:
        if not any(isinstance(m, nn.Linear) for m in ctx.build_model().modules()):
            return "soteria prunes the input features of the last linear layer; there is none"
        return None

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        index, _ = last_linear_index(ctx.model)
        scores = soteria_scores(ctx.model, ctx.x, self.offset, ctx.client.bn_mode)
        pruned = pruned_features(scores, self.ratio)
        out = update.clone()
        grad_w = out.tensors[index].clone()
        grad_w[:, pruned.to(grad_w.device)] = 0
        out.tensors[index] = grad_w
        out.info["soteria_pruned_features"] = int(pruned.numel())
        out.info["soteria_features"] = int(scores.numel())
        return out
