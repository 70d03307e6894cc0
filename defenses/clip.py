"""Norm clipping of the shared update (the clipping step of DP-FedAvg, without its noise)."""

from __future__ import annotations

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


def global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all tensors concatenated."""
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors))


@register_defense("clip")
class Clip(Defense):
    """Scale the update down so its L2 norm is at most `max_norm` (whole update or per tensor)."""

    paper = ("McMahan, Ramage, Talwar, Zhang. Learning Differentially Private Recurrent Language "
             "Models. ICLR 2018 (update clipping of DP-FedAvg)")
    params = (
        Param("max_norm", float, 1.0, low=0.0,
              help="L2 norm bound, in the units of the update (gradient or weight delta); "
                   "met up to the update's float32 rounding (~1e-7 relative)"),
        Param("scope", str, "global", choices=("global", "tensor"),
              help="global: one norm over all tensors; tensor: each tensor clipped separately"),
    )

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        if self.scope == "global":
            norm = float(global_norm(update.tensors))
            factor = min(1.0, self.max_norm / norm) if norm > 0 else 1.0
            out.tensors = [t * factor for t in update.tensors]
            out.info.update(clip_norm_before=norm, clip_factor=factor)
        else:
            norms = [float(t.double().norm()) for t in update.tensors]
            factors = [min(1.0, self.max_norm / n) if n > 0 else 1.0 for n in norms]
            out.tensors = [t * f for t, f in zip(update.tensors, factors)]
            out.info.update(clip_norm_before=norms, clip_factor=factors)
        return out
