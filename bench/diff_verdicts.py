"""The verdicts of ``leakbench diff`` on one row: B's interval against A's, and which of the
two finished more of its seeds (:mod:`bench.diff`)."""

from __future__ import annotations

import pandas as pd

from bench.leaderboard.aggregate import interval
from bench.leaderboard.uncertainty import Interval, clearly_better

REGRESSION, IMPROVEMENT, UNCHANGED, UNJUDGED = "regression", "improvement", "unchanged", \
    "not judged"


def all_failed(row: pd.Series) -> bool:
    """Whether every seed of an aggregated row ran and none finished (each diverged, failed or
    timed out)."""
    n, ok = row.get("n"), row.get("n_ok")
    return not pd.isna(n) and int(n) > 0 and not pd.isna(ok) and int(ok) == 0


def finished_first(a: pd.Series, b: pd.Series, verdict: str, finished: str = UNJUDGED) -> str:
    """The row's verdict from ``verdict``, on its intervals with failed seeds at their floors,
    ``finished``, on its finished seeds alone (:func:`finished_verdict`), and which side
    finished the greater share of its seeds; symmetric (A against B mirrors B against A).

    Where the share that finished fell: finished seeds worse too make a regression; finished
    seeds better is a mixed change, which the floors' intervals judge; otherwise an
    improvement by those intervals is a regression, since a failed seed enters at its floor
    (a mid-grey guess), which can sit above a weak attack's finished values (a row whose
    seeds stopped finishing had read as an improvement until its last seed failed too).
    Where the share rose, the mirror."""
    share = [int(r["n_ok"]) / int(r["n"]) if not pd.isna(r.get("n")) and int(r["n"]) > 0
             and not pd.isna(r.get("n_ok")) else None for r in (a, b)]
    if None in share or share[0] == share[1]:
        return verdict
    moved, against = (REGRESSION, IMPROVEMENT) if share[1] < share[0] else \
        (IMPROVEMENT, REGRESSION)  # what the share's move says, and its opposite
    if finished == moved:
        return moved
    if finished == against:
        return verdict
    return moved if verdict == against else verdict


def finished_verdict(a: pd.Series | None, b: pd.Series | None, name: str,
                     higher_is_better: bool) -> str:
    """B against A on metric ``name`` over the finished seeds alone (rows aggregated from the
    ``ok`` records only; ``None``: no seed of that side finished)."""
    if a is None or b is None:
        return UNJUDGED
    return judge(interval(a, name), interval(b, name), higher_is_better)


def judge(a: Interval, b: Interval, higher_is_better: bool) -> str:
    """B against A: regression, improvement, unchanged (overlap) or not judged (no interval)."""
    if None in (a.low, a.high, b.low, b.high):
        return UNJUDGED
    if clearly_better(a, b, higher_is_better):
        return REGRESSION
    if clearly_better(b, a, higher_is_better):
        return IMPROVEMENT
    return UNCHANGED
