"""ROUGE-L F-measure of each recovered sentence against its original (longest common
subsequence)."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.text_common import Sequences, rouge_f


def rougel(originals: Sequences, recons: Sequences) -> torch.Tensor:
    return rouge_f(originals, recons, "rougeL")


@register_metric
class RougeL(Metric):
    """ROUGE-L F-measure (longest common subsequence; Lin 2004, the `rouge-score` package), per
    matched sentence: the text metric of TAG (Deng et al. 2021), LAMP and DAGER."""

    name = "rougel"
    label = "ROUGE-L"
    modality = "text"
    higher_is_better = True
    kind = "per_item"
    inputs = "tokens"
    digits = 3
    order = 132
    best = 1.0
    worst = 0.0
    compute = staticmethod(rougel)
