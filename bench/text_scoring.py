"""Scoring text: match recovered sequences to the originals one-to-one, then the registered
text metrics (token accuracy, exact match, ROUGE-1/2/L) on the matched pairs.

- Sequences are token ids; the metrics see token strings with the trailing ``[PAD]`` left
  out. A ``[PAD]`` before a real token stays, as a wrong token at its position (ROUGE drops
  it: it is no word).
- Matching is Hungarian (no sequence is used twice) on ROUGE-1 F, as LAMP's and DAGER's
  evaluations match (their cost is 1 − ROUGE-1), ties broken by the number of the original's
  real positions whose tokens agree, then by the position-free token overlap.
- A text cell succeeds when the suite's success rule holds if that rule is on a text metric,
  else when :data:`TEXT_SUCCESS` holds (mean ROUGE-1 ≥ 0.5): the success rule is per modality.
- The record keeps the matched sentences side by side (``text_pairs``), each recovered token
  marked when it is the original's token at that position.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from bench.metrics import SuccessRule, get_metric, list_metrics
from bench.metrics.text_common import rouge1_fractions
from bench.textcorpus import PAD

TEXT_SUCCESS = SuccessRule("rouge1", 0.5)
"""The text cells' success rule when the suite's is on another modality's metric."""


def success_rule(modality: str, suite_rule: SuccessRule) -> SuccessRule:
    """The rule a cell of ``modality`` is judged by: the suite's when it is on a metric of
    that modality, else the modality's default (PSNR ≥ 20 dB, ROUGE-1 ≥ 0.5)."""
    if get_metric(suite_rule.metric).modality == modality:
        return suite_rule
    return TEXT_SUCCESS if modality == "text" else SuccessRule()


def success_fields(modality: str, suite_rule: SuccessRule) -> dict[str, Any]:
    """An attack record's ``success_psnr`` and ``success_rule``: the rule its cell is judged
    by (:func:`success_rule`), whatever became of the cell."""
    rule = success_rule(modality, suite_rule)
    return {"success_psnr": rule.threshold if rule.metric == "psnr" else None,
            "success_rule": {"metric": rule.metric, "at_least": rule.at_least,
                             "at_most": rule.at_most}}


def tokens(ids: torch.Tensor, vocab: tuple[str, ...]) -> list[str]:
    """The token strings of one id sequence, its trailing [PAD] left out. A [PAD] before the
    last real token stays: there it is a wrong token, and dropping it would shift every later
    token onto the original's positions."""
    out = [vocab[int(i)] for i in ids]
    while out and out[-1] == PAD:
        out.pop()
    return out


def match_sequences(originals: torch.Tensor, recon: torch.Tensor, pad_id: int = 0,
                    primary: tuple[torch.Tensor, torch.Tensor] | None = None) -> list[int]:
    """Indices into ``recon`` matched one-to-one to each original (B×L ids each), on
    ``primary`` (B×B fractions, numerators and denominators, higher is better;
    :func:`score_text` passes ROUGE-1 F's), ties broken by the original's real (non-[PAD])
    positions that agree, then by the real tokens they share in any position."""
    real = originals != pad_id  # a [PAD] recovered where the original pads is no evidence
    same = ((originals[:, None, :] == recon[None, :, :]) & real[:, None, :]).sum(-1)

    def words(ids: torch.Tensor) -> Counter:
        return Counter(t for t in ids.tolist() if t != pad_id)

    recovered = [words(r) for r in recon]
    overlap = torch.tensor([[sum((w_o & w_r).values()) for w_r in recovered]
                            for w_o in map(words, originals)], dtype=torch.int64)
    length = originals.shape[1]
    tie = same * (length + 1) + overlap  # integers below (L + 1)²
    cost = -tie.double()
    if primary is not None:
        cost = _lexicographic(*primary, tie, len(originals) * (length + 1) ** 2)
    rows, cols = linear_sum_assignment(cost.numpy())
    order = [0] * len(originals)
    for r, c in zip(rows, cols):
        order[int(r)] = int(c)
    return order


def _lexicographic(num: torch.Tensor, den: torch.Tensor, tie: torch.Tensor, ties: int
                   ) -> torch.Tensor:
    """A cost whose every assignment sum orders by Σ num/den first, then by Σ ``tie``
    (each below ``ties``/B), in integers exact in float64: the fractions over the least
    common multiple D of their denominators, times W > the largest tie sum. Where
    B·W·(D + 1) passes 2^53 (long sequences: D grows as lcm(1..2L)), the fractions are
    rounded to that precision instead, and near-equal sums may be ordered by their ties."""
    width = ties + 1
    dens = sorted({int(d) for d in den.flatten().tolist() if d > 0}) or [1]
    common = math.lcm(*dens)
    limit = 2 ** 53 // (len(tie) * width)
    safe = den.clamp_min(1)
    if common + 1 <= limit:
        scaled = torch.where(den > 0, num * (common // safe), torch.zeros_like(num))
    else:
        scaled = torch.round(num.double() / safe.double() * (limit - 1)).long()
    return -(scaled * width + tie).double()


def score_text(originals: torch.Tensor, recon: torch.Tensor, vocab: tuple[str, ...],
               success: SuccessRule) -> dict[str, Any]:
    """Every per-item text metric on the matched pairs (mean, worst, per sequence)."""
    originals, recon = originals.detach().cpu().long(), recon.detach().cpu().long()
    if recon.shape != originals.shape:
        raise ValueError(f"reconstruction shape {tuple(recon.shape)} does not match the "
                         f"batch {tuple(originals.shape)}")
    orig = [tokens(o, vocab) for o in originals]
    every = [tokens(r, vocab) for r in recon]
    # ROUGE-1 of every (original, recovery), exactly: the papers match on it
    order = match_sequences(originals, recon, vocab.index(PAD), rouge1_fractions(orig, every))
    rec = [every[i] for i in order]
    out: dict[str, Any] = {}
    per: dict[str, list[float]] = {}
    for m in list_metrics("text", "per_item"):
        values = m.compute(orig, rec)
        out[m.name] = float(values.mean())
        out[f"{m.name}_worst"] = float(values.min() if m.higher_is_better else values.max())
        per[m.name] = [float(v) for v in values]
    out["success"] = success.holds(out[success.metric])
    out["per_sequence"] = per
    out["matching"] = order
    return out


def text_floor_metrics(originals: torch.Tensor, vocab: tuple[str, ...]) -> dict[str, float]:
    """The text metrics of an empty guess (every position [PAD]): what an attack that returns
    nothing scores; a failed seed counts at it."""
    blank = torch.zeros_like(originals.cpu().long())
    scored = score_text(originals, blank, vocab, TEXT_SUCCESS)
    return {m.name: scored[m.name] for m in list_metrics("text", "per_item")}


def text_pairs(originals: torch.Tensor, recon: torch.Tensor, order: list[int],
               vocab: tuple[str, ...]) -> list[dict[str, Any]]:
    """Each original beside its matched recovery: the token strings, and per recovered token
    whether it is the original's token at that position."""
    pairs = []
    for o, i in zip(originals.cpu(), order):
        r = recon[i].cpu()
        recovered = tokens(r, vocab)
        original = tokens(o, vocab)  # past its end nothing is correct, [PAD] included
        pairs.append({"original": original, "recovered": recovered,
                      "correct": [k < len(original) and a == b for k, (a, b) in
                                  enumerate(zip(o.tolist()[:len(recovered)],
                                                r.tolist()[:len(recovered)]))]})
    return pairs
