"""ROUGE-1 F-measure of each recovered sentence against its original (unigram overlap)."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.text_common import Sequences, rouge_f


def rouge1(originals: Sequences, recons: Sequences) -> torch.Tensor:
    return rouge_f(originals, recons, "rouge1")


@register_metric
class Rouge1(Metric):
    """ROUGE-1 F-measure (unigram overlap; Lin 2004, the `rouge-score` package), per matched
    sentence: the text metric of TAG (Deng et al. 2021), LAMP and DAGER."""

    name = "rouge1"
    label = "ROUGE-1"
    modality = "text"
    higher_is_better = True
    kind = "per_item"
    inputs = "tokens"
    digits = 3
    order = 130
    best = 1.0
    worst = 0.0
    compute = staticmethod(rouge1)
