"""Mean squared error per matched pair, on images in [0,1]."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric


def mse_per_pair(originals01: torch.Tensor, recon01: torch.Tensor) -> torch.Tensor:
    """MSE of each reconstruction against its original (N values)."""
    return ((recon01 - originals01) ** 2).flatten(1).mean(-1)


@register_metric
class MSE(Metric):
    """Mean squared pixel error (data range 1): the quantity PSNR is a log of, and the cost the
    one-to-one matching minimises; kept in records and the CSV, not a leaderboard column."""

    name = "mse"
    label = "MSE"
    modality = "image"
    higher_is_better = False
    kind = "per_item"
    digits = 4
    order = 30
    best = 0.0
    worst = 1.0
    leaderboard = False
    compute = staticmethod(mse_per_pair)
