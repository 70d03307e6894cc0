"""Exact match: whether a recovered sequence equals its original token for token."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.text_common import Sequences


def exact_match(originals: Sequences, recons: Sequences) -> torch.Tensor:
    """Per matched pair: 1.0 when the sequences are identical, else 0.0."""
    return torch.tensor([float(o == r) for o, r in zip(originals, recons)], dtype=torch.float64)


@register_metric
class ExactMatch(Metric):
    """Exact sequence match after one-to-one matching: the share of sequences recovered
    whole (DAGER's exact-recovery claim, Petrov et al. 2024)."""

    name = "exact"
    label = "Exact"
    modality = "text"
    higher_is_better = True
    kind = "per_item"
    inputs = "tokens"
    digits = 3
    order = 120
    best = 1.0
    worst = 0.0
    share = True  # a fraction of the sequences recovered exactly
    compute = staticmethod(exact_match)
