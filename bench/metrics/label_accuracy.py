"""Label accuracy: how many of the batch's labels the attack recovered, order-independent."""

from __future__ import annotations

from collections import Counter

import torch

from bench.metrics.base import Metric, register_metric


def label_accuracy(true: torch.Tensor, inferred: torch.Tensor | None) -> float | None:
    """Multiset overlap of true and inferred labels over the batch size, or over the inferred
    count where an attack returned more labels than the batch holds (every class B times
    would otherwise score 1); None if none inferred."""
    if inferred is None:
        return None
    guesses = inferred.flatten().tolist()
    overlap = Counter(true.tolist()) & Counter(guesses)
    return sum(overlap.values()) / max(len(true), len(guesses))


@register_metric
class LabelAccuracy(Metric):
    """Label accuracy: the share of the batch's labels recovered, as a multiset overlap so that
    order does not matter (label inference as in iDLG, Zhao et al. 2020)."""

    name = "label_acc"
    label = "Label acc"
    modality = "image"
    higher_is_better = True
    kind = "per_item"
    inputs = "labels"
    digits = 2
    order = 50
    best = 1.0
    worst = 0.0
    share = True  # a fraction of the labels recovered
    no_floor_value = 0.0  # no guess is scored for labels: a failed seed recovered none
    compute = staticmethod(label_accuracy)
