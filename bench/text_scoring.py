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

from collections import Counter
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from bench.metrics import SuccessRule, get_metric, list_metrics
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
                    primary: torch.Tensor | None = None) -> list[int]:
    """Indices into ``recon`` matched one-to-one to each original (B×L ids each), on
    ``primary`` (B×B, higher is better, compared to 6 decimals; :func:`score_text` passes
    ROUGE-1 F), ties broken by the original's real (non-[PAD]) positions that agree, then by
    the real tokens they share in any position."""
    real = originals != pad_id  # a [PAD] recovered where the original pads is no evidence
    same = ((originals[:, None, :] == recon[None, :, :]) & real[:, None, :]).sum(-1).double()

    def words(ids: torch.Tensor) -> Counter:
        return Counter(t for t in ids.tolist() if t != pad_id)

    recovered = [words(r) for r in recon]
    overlap = torch.tensor([[sum((w_o & w_r).values()) for w_r in recovered]
                            for w_o in map(words, originals)], dtype=torch.float64)
    length = originals.shape[1]
    cost = -(same * (length + 1) + overlap)  # integers below (L + 1)²
    if primary is not None:  # lexicographic, in integers exact in float64
        cost = cost - torch.round(primary.double() * 1e6) * (length + 1) ** 2
    rows, cols = linear_sum_assignment(cost.numpy())
    order = [0] * len(originals)
    for r, c in zip(rows, cols):
        order[int(r)] = int(c)
    return order


def score_text(originals: torch.Tensor, recon: torch.Tensor, vocab: tuple[str, ...],
               success: SuccessRule) -> dict[str, Any]:
    """Every per-item text metric on the matched pairs (mean, worst, per sequence)."""
    originals, recon = originals.detach().cpu().long(), recon.detach().cpu().long()
    if recon.shape != originals.shape:
        raise ValueError(f"reconstruction shape {tuple(recon.shape)} does not match the "
                         f"batch {tuple(originals.shape)}")
    orig = [tokens(o, vocab) for o in originals]
    every = [tokens(r, vocab) for r in recon]
    pairs = len(orig)
    rouge = get_metric("rouge1").compute(  # of every (original, recovery): the papers match on it
        [o for o in orig for _ in range(pairs)], every * pairs).reshape(pairs, pairs)
    order = match_sequences(originals, recon, vocab.index(PAD), rouge)
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
