"""The Defenses tables' ε column (image and text alike): the differential-privacy budget a
defense reports, beside the numbers it belongs to, with the note that says which it is."""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.metrics import format_value


def epsilon_column(best: pd.DataFrame, g: pd.DataFrame, has_utility: bool
                   ) -> tuple[pd.Series, str]:
    """(ε per defense, the column's header): the utility run's own (q, T) where the table
    shows its accuracy, else the attack cells' configured (q, T); never a mix. ``best``: the
    table's rows (with the utility summary merged in), ``g``: the scenario's records."""
    if has_utility and "utility_epsilon" in best and best["utility_epsilon"].notna().any():
        return best.set_index("defense")["utility_epsilon"].dropna(), "ε (utility run)"
    if "epsilon" not in g:
        return pd.Series(dtype=float), "ε"
    epsilon = g.dropna(subset=["epsilon"]).groupby("defense")["epsilon"].first()
    return epsilon, "ε (configured)" if has_utility else "ε"


def epsilon_cell(epsilon: pd.Series, defense: str) -> str:
    """A defense's ε as the table shows it; "–" for one that reports none."""
    eps = epsilon.get(defense)
    return "–" if eps is None or pd.isna(eps) else format_value(eps, 2)


def epsilon_note(epsilon: pd.Series, header: str, g: pd.DataFrame,
                 rows: list[dict[str, Any]]) -> str:
    """What the ε column holds, and why a defense shown "–" has none, where its accountant
    said (once each); "" without the column."""
    if not len(epsilon):
        return ""
    if header == "ε (utility run)":
        note = (" ε (utility run): the differential-privacy budget at the defense's δ of the "
                "utility track's own training (sampling rate = its batch / the train split, "
                "steps = its steps; Opacus's accountant), beside its accuracy.")
    else:
        note = (" ε: the differential-privacy budget at the defense's δ for its configured "
                "sampling rate and steps (Opacus's accountant), a whole training run's.")
    dashed = {row["Defense"] for row in rows if row.get(header) == "–"}
    if "epsilon_note" in g:  # a defense shown "–" whose accountant said why: once each
        why = g[g["epsilon"].isna() & g["epsilon_note"].notna() & g["defense"].isin(dashed)]
        for defense, text in why.groupby("defense")["epsilon_note"].first().items():
            note += f" No ε for {defense}: {str(text).rstrip('.')}."
    return note
