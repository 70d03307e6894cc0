"""Top-k sparsification of the shared update (Aji & Heafield 2017; Lin et al. 2018)."""

from __future__ import annotations

import math

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


def kept_count(fraction: float, n: int) -> int:
    """⌈fraction·n⌉ entries, robust to float noise (0.1·30 is 3, not 4): prune's complement."""
    return min(n, math.ceil(round(fraction * n, 6)))


def keep_largest(t: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly ``k`` entries of ``t`` (those of largest magnitude), zero the rest."""
    flat = t.flatten()
    if k >= flat.numel():
        return t.clone()
    out = torch.zeros_like(flat)
    if k > 0:
        idx = torch.argsort(flat.abs(), descending=True, stable=True)[:k]
        out[idx] = flat[idx]
    return out.view_as(t)


@register_defense("topk")
class TopK(Defense):
    """Keep the largest-magnitude fraction `fraction` of the update's entries, zero the rest."""

    paper = ("Aji & Heafield. Sparse Communication for Distributed Gradient Descent. EMNLP 2017; "
             "Lin et al. Deep Gradient Compression. ICLR 2018")
    params = (
        Param("fraction", float, 0.1, low=0.0, high=1.0,
              help="fraction of entries kept: ⌈fraction·n⌉ of the n entries in the scope"),
        Param("scope", str, "tensor", choices=("tensor", "global"),
              help="tensor: the fraction of every tensor separately; global: of all entries"),
    )

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        if self.scope == "tensor":
            out.tensors = [keep_largest(t, kept_count(self.fraction, t.numel()))
                           for t in update.tensors]
        else:
            flat = torch.cat([t.flatten() for t in update.tensors])
            kept = keep_largest(flat, kept_count(self.fraction, flat.numel()))
            out.tensors = [part.view_as(t) for part, t in
                           zip(kept.split([t.numel() for t in update.tensors]), update.tensors)]
        return out
