"""The verdicts of ``leakbench diff`` on one row: B's interval against A's, and which of the
two finished more of its seeds (:mod:`bench.diff`)."""

from __future__ import annotations

import pandas as pd

from bench.leaderboard.uncertainty import Interval, clearly_better

REGRESSION, IMPROVEMENT, UNCHANGED, UNJUDGED = "regression", "improvement", "unchanged", \
    "not judged"


def all_failed(row: pd.Series) -> bool:
    """Whether every seed of an aggregated row ran and none finished (each diverged, failed or
    timed out)."""
    n, ok = row.get("n"), row.get("n_ok")
    return not pd.isna(n) and int(n) > 0 and not pd.isna(ok) and int(ok) == 0


def finished_first(a: pd.Series, b: pd.Series, verdict: str) -> str:
    """``verdict`` on the two rows' intervals, unless the share of seeds that finished moved
    the other way: a diverged or failed seed enters at its floor (a mid-grey guess), which
    can sit above a weak attack's finished values, so a row whose seeds stopped finishing
    had read as an improvement (exit 0), until its last seed failed too (a regression); the
    share of finished seeds decides then, as it does where every seed of a side failed."""
    share = [int(r["n_ok"]) / int(r["n"]) if not pd.isna(r.get("n")) and int(r["n"]) > 0
             and not pd.isna(r.get("n_ok")) else None for r in (a, b)]
    if None in share or share[0] == share[1]:
        return verdict
    if share[1] < share[0] and verdict == IMPROVEMENT:
        return REGRESSION
    if share[1] > share[0] and verdict == REGRESSION:
        return IMPROVEMENT
    return verdict


def judge(a: Interval, b: Interval, higher_is_better: bool) -> str:
    """B against A: regression, improvement, unchanged (overlap) or not judged (no interval)."""
    if None in (a.low, a.high, b.low, b.high):
        return UNJUDGED
    if clearly_better(a, b, higher_is_better):
        return REGRESSION
    if clearly_better(b, a, higher_is_better):
        return IMPROVEMENT
    return UNCHANGED
