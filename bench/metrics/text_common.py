"""What the text metrics share: sequences as token strings, and ROUGE from ``rouge-score``.

A text metric's ``compute(originals, recons)`` takes two equally long lists of token-string
sequences, matched pairs (``[PAD]`` left out), and returns one value per pair.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from typing import Any

import torch

from bench.textcorpus import PAD

Sequences = list[list[str]]


class OwnTokens:
    """A ``rouge-score`` tokenizer that keeps leakbench's tokens: the sequence's tokens
    (joined by spaces; a word-level token holds no whitespace), lower-cased. rouge-score's
    default keeps only ``[a-z0-9]`` runs, which scores an exact recovery of non-Latin text 0
    and splits or drops punctuation tokens."""

    def tokenize(self, text: str) -> list[str]:
        return text.lower().split()


@lru_cache(maxsize=1)
def _scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=False,
                                    tokenizer=OwnTokens())


def rouge_f(originals: Sequences, recons: Sequences, kind: str) -> torch.Tensor:
    """ROUGE-``kind`` F-measure of each recovered sequence against its original (Lin 2004),
    computed by ``rouge-score`` on the sequences' own tokens (:class:`OwnTokens`); a [PAD]
    inside a sequence is no word."""
    values = [_scorer().score(_words(o), _words(r))[kind].fmeasure
              for o, r in zip(originals, recons)]
    return torch.tensor(values, dtype=torch.float64)


def _words(sequence: list[str]) -> str:
    return " ".join(t for t in sequence if t != PAD)


def rouge1_fractions(originals: Sequences, recons: Sequences) -> tuple[torch.Tensor, torch.Tensor]:
    """ROUGE-1 F of every (original i, recovery j) as exact integers ``2·overlap`` and
    ``|original| + |recovery|`` (B×B each, int64): F = 2PR/(P + R) = 2·overlap/(|o| + |r|) on
    the words :func:`rouge_f` counts (lower-cased, [PAD] no word); 0/0 is F = 0, as there.
    What matching compares exactly, and without rouge-score's B² calls."""
    def words(sequence: list[str]) -> Counter:
        return Counter(OwnTokens().tokenize(_words(sequence)))

    mine, theirs = [words(o) for o in originals], [words(r) for r in recons]
    overlap = torch.tensor([[sum((o & r).values()) for r in theirs] for o in mine],
                           dtype=torch.int64).reshape(len(mine), len(theirs))
    sizes_o = torch.tensor([sum(o.values()) for o in mine], dtype=torch.int64)
    sizes_r = torch.tensor([sum(r.values()) for r in theirs], dtype=torch.int64)
    return 2 * overlap, sizes_o[:, None] + sizes_r[None, :]
