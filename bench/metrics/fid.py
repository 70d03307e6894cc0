"""FID over a group of cells: reconstructions pooled over seeds against their originals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.metrics.base import Metric, register_metric
from bench.perceptual import FID_LAYER, MIN_GROUP, fid_kid


def fid_kid_of_group(originals: Sequence[torch.Tensor], recons: Sequence[torch.Tensor],
                     weights: str | None = None, min_group: int = MIN_GROUP,
                     feature_layer: str = FID_LAYER) -> dict[str, Any]:
    """FID and KID (one torch-fidelity pass) of the cells' reconstructions pooled against their
    originals: ``{"fid", "kid", "n", "reason", ...}``, n/a below ``min_group`` images."""
    n, need = sum(len(o) for o in originals), max(4, min_group)  # KID: two halves of 2+
    if n < need:
        return {"fid": None, "kid": None, "n": n,
                "reason": f"n/a: {n} images, fewer than the {need} required"}
    return fid_kid(torch.cat(list(originals)), torch.cat(list(recons)), weights, min_group,
                   feature_layer)


def fid_of_group(originals: Sequence[torch.Tensor], recons: Sequence[torch.Tensor],
                 **options: Any) -> float | None:
    return fid_kid_of_group(originals, recons, **options)["fid"]


@register_metric
class FID(Metric):
    """Fréchet Inception distance (Heusel et al., NeurIPS 2017) between Inception-v3 pool
    features of pooled reconstructions and originals; biased upwards on few images, so compare
    only groups of equal size. Needs local Inception weights (see bench.perceptual)."""

    name = "fid"
    label = "FID"
    modality = "image"
    higher_is_better = False
    kind = "pooled"
    digits = 2
    order = 60
    needs_weights = True
    leaderboard = False
    compute = staticmethod(fid_of_group)
