"""The tables' notes on seeds a mean leaves out: ones that failed before their attack ran, or
that had no floor to count at (:mod:`bench.leaderboard.uncertainty`)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from bench.metrics import Metric


def unattacked_note(n: int, lead: str = "", what: str = " and n") -> str:
    """The sentence on ``n`` seeds that failed before their attack ran ("" for none)."""
    return "" if not n else (
        f"{lead} {n} seed(s) that failed before the attack ran (setup: data, victim, client "
        "update or defense; or a task no worker began): they measured nothing, so they are "
        f"left out of the means{what}.")


def missing_note(summary: pd.DataFrame, shown: Sequence[type[Metric]] = ()) -> str:
    """Seeds left out of a mean: those that failed before their attack ran (they measured
    nothing), those of the ranking metric without a floor in the scenario's records, and
    those of a shown metric that has no floor where the ranking metric has one
    (LPIPS: the grey guess is not scored with it), whose column's n is then smaller."""
    unattacked = int((summary["n"] - summary["n_attacked"]).sum()) \
        if "n_attacked" in summary else 0
    missing = (int(summary["n_missing"].sum()) if "n_missing" in summary else 0) - unattacked
    text = unattacked_note(unattacked, " Except", ", n and Success, and counted under Failed")
    text += "" if not missing else (
        f" {missing} diverged or failed seed(s) had no floor to count at (no "
        "floor_metrics in the scenario's records): left out of the means and n, counted "
        "under Diverged/Failed.")
    for m in shown:
        col = f"{m.name}_n_missing"
        if col not in summary:
            continue
        rows = summary[summary[f"{m.name}_n"].fillna(0) > 0]  # an n/a column drops no seed
        more = int((rows[col].fillna(0) - rows.get("n_missing", 0)).clip(lower=0).sum())
        if more:
            text += (f" {m.label}: {more} diverged or failed seed(s) have no floor for it "
                     f"(no floor_{m.name} in the records): left out of its mean, which is "
                     "over fewer seeds than n.")
    return text
