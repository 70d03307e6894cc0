"""ROUGE-2 F-measure of each recovered sentence against its original (bigram overlap)."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.text_common import Sequences, rouge_f


def rouge2(originals: Sequences, recons: Sequences) -> torch.Tensor:
    return rouge_f(originals, recons, "rouge2")


@register_metric
class Rouge2(Metric):
    """ROUGE-2 F-measure (bigram overlap; Lin 2004, the `rouge-score` package), per matched
    sentence: the text metric of TAG (Deng et al. 2021), LAMP and DAGER."""

    name = "rouge2"
    label = "ROUGE-2"
    modality = "text"
    higher_is_better = True
    kind = "per_item"
    inputs = "tokens"
    digits = 3
    order = 131
    best = 1.0
    worst = 0.0
    compute = staticmethod(rouge2)
