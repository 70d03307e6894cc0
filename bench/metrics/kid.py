"""KID over a group of cells: reconstructions pooled over seeds against their originals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.fid import fid_kid_of_group


def kid_of_group(originals: Sequence[torch.Tensor], recons: Sequence[torch.Tensor],
                 **options: Any) -> float | None:
    return fid_kid_of_group(originals, recons, **options)["kid"]


@register_metric
class KID(Metric):
    """Kernel Inception distance (Bińkowski et al., ICLR 2018): squared MMD with a cubic
    polynomial kernel on Inception-v3 pool features; unbiased, unlike FID, but noisy on small
    groups. Needs local Inception weights (see bench.perceptual)."""

    name = "kid"
    label = "KID"
    modality = "image"
    higher_is_better = False
    kind = "pooled"
    digits = 4
    order = 70
    needs_weights = True
    leaderboard = False
    compute = staticmethod(kid_of_group)
