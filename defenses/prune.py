"""Gradient pruning (DLG paper, Zhu et al. 2019; Lin et al. 2018's deep gradient compression)."""

from __future__ import annotations

import math

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


def prune_smallest(t: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero exactly ``floor(ratio * numel)`` entries of ``t``: those of smallest magnitude."""
    n_zero = math.floor(round(ratio * t.numel(), 6))  # 0.7·90 is 63, not int(62.99…)
    if n_zero == 0:
        return t.clone()
    flat = t.flatten().clone()
    idx = torch.argsort(flat.abs(), stable=True)[:n_zero]
    flat[idx] = 0
    return flat.view_as(t)


@register_defense("prune")
class Prune(Defense):
    """Zero the smallest-magnitude fraction `ratio` of each tensor of the update (per tensor)."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019 (Sec. 5)"
    params = (Param("ratio", float, 0.2, low=0.0, high=1.0,
                    help="fraction of entries zeroed in every tensor separately"),)

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        out.tensors = [prune_smallest(t, self.ratio) for t in update.tensors]
        return out
