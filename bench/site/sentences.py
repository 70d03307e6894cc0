"""Recovered sentences for the site: a text cell's originals beside their matched recoveries,
in the one-to-one order the scoring used (the record's ``text_pairs``), each recovered token
marked when it is the original's token at that position, and each pair's token accuracy and
ROUGE-1 (the record's ``metrics.per_sequence``).

Which tokens count as correct is :func:`bench.leaderboard.text_tables.token_marks`, the
markdown leaderboard's bold. The tokens are left as text: the templates escape them (they come
from a corpus or a user's files). A record without well-formed ``text_pairs`` has none here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.leaderboard.text_tables import token_marks
from bench.metrics import get_metric

PAIR_METRICS = ("token_acc", "rouge1")  # the per-pair scores shown beside each pair
NOTE = ("the best and the worst seed of each attack by ROUGE-1, each original sentence "
        "beside its recovery, in the one-to-one order the scoring matched them, with the "
        "pair's token accuracy and ROUGE-1; a marked recovered token is the original's token "
        "at that position.")


def sentences_note(leaderboard_note: str) -> str:
    """The site's note on a sentences table, over the cells the leaderboard's says it shows
    (the words before its first colon: against no defense, or against each)."""
    return f"{leaderboard_note.split(':', 1)[0]}: {NOTE}"


@dataclass
class SentencePair:
    """One original sentence and its matched recovery, token by token."""

    original: list[str]
    recovered: list[tuple[str, bool]]  # (token, is the original's token at that position)
    score: str  # e.g. "Token acc. 0.917 · ROUGE-1 0.960", empty where the record has none


@dataclass
class Sentences:
    """What the site shows of one text cell's recovery."""

    cell_id: str
    pairs: list[SentencePair] = field(default_factory=list)

    @property
    def correct(self) -> str:
        """e.g. "11/12 recovered tokens correct"."""
        marks = [ok for p in self.pairs for _, ok in p.recovered]
        return f"{sum(marks)}/{len(marks)} recovered tokens correct"


def _well_formed(pair: Any) -> bool:
    return (isinstance(pair, dict) and all(isinstance(pair.get(k), list)
                                           for k in ("original", "recovered", "correct"))
            and len(pair["correct"]) == len(pair["recovered"]))


def _scores(record: dict[str, Any], n: int) -> list[str]:
    per = ((record.get("metrics") or {}).get("per_sequence") or {})
    parts: list[list[str]] = [[] for _ in range(n)]
    for name in PAIR_METRICS:
        values = per.get(name)
        if not isinstance(values, list) or len(values) != n:
            continue
        m = get_metric(name)
        for i, v in enumerate(values):
            parts[i].append(f"{m.label} {m.format(v)}")
    return [" · ".join(p) for p in parts]


def cell_sentences(record: dict[str, Any]) -> Sentences | None:
    """The sentence pairs of a text record, or None when it kept none."""
    pairs = record.get("text_pairs")
    if not isinstance(pairs, list) or not pairs or not all(map(_well_formed, pairs)):
        return None
    shown = Sentences(record["cell_id"])
    for pair, score in zip(pairs, _scores(record, len(pairs))):
        shown.pairs.append(SentencePair([str(t) for t in pair["original"]],
                                        token_marks(pair), score))
    return shown
