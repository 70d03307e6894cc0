"""Token accuracy: the share of an original's tokens recovered at their position."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.text_common import Sequences


def token_accuracy(originals: Sequences, recons: Sequences) -> torch.Tensor:
    """Per matched pair: positions i < len(original) where recovered[i] == original[i],
    over len(original) (1 for an empty original)."""
    values = []
    for o, r in zip(originals, recons):
        hits = sum(a == b for a, b in zip(o, r))
        values.append(hits / len(o) if o else 1.0)
    return torch.tensor(values, dtype=torch.float64)


@register_metric
class TokenAccuracy(Metric):
    """Token accuracy after one-to-one (Hungarian) matching of sequences: the share of each
    original's tokens the attack put at the right position (DAGER, Petrov et al. 2024, and
    LAMP, Balunović et al. 2022, report token-level recovery)."""

    name = "token_acc"
    label = "Token acc"
    modality = "text"
    higher_is_better = True
    kind = "per_item"
    inputs = "tokens"
    digits = 3
    order = 110
    best = 1.0
    worst = 0.0
    share = True  # a fraction of the tokens recovered
    compute = staticmethod(token_accuracy)
