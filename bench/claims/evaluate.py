"""Claims against records: each claim's cells, its metric's mean with its 95% interval, and a
verdict (``holds``, ``does not hold``, ``not run``, ``not judged``).

Every seed enters as the leaderboard takes it (:func:`~bench.leaderboard.uncertainty.
seed_values`: a diverged, failed or timed-out seed at its floor, pooled over its scenario);
``success`` is 1 or 0 per seed (a failed seed 0), its interval Wilson's; ``risk_index`` is the
cell architecture's R-GAP risk index. A seed is a private batch: cells a claim pools on one
(other defenses, attacks, client modes) enter at their mean. A bound (``at_least``/
``at_most``) is tested on the mean; an ordering on the two means, or with ``separated`` on an
interval: where both sides ran on the same private batches (two defenses, or two attacks, of
one scenario: the harness pairs them by design), the 95% t-interval of the per-batch
differences must exclude 0 (a paired test, as the two sides share each batch's images,
victim and dummy start); otherwise (two architectures, or batches one side lacks) the two
intervals must not overlap. A claim none of whose cells ran is ``not run``; a ``separated``
ordering with a side of fewer than two seeds (no interval) is ``not judged``, as ``leakbench
diff`` calls such a row: either is neither held nor failed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from bench.claims.schema import RISK_INDEX, SUCCESS, Claim, ClaimsError
from bench.leaderboard.frames import records_frame, scenarios
from bench.leaderboard.pivot import NAMED, WHERE, table_metrics
from bench.leaderboard.uncertainty import (
    SEED_STATUSES,
    UNBATCHED,
    Interval,
    clearly_better,
    metric_interval,
    per_private_batch,
    seed_values,
    t_interval,
    wilson_interval,
)
from bench.metrics.base import is_share
from bench.stages import never_attacked

HOLDS, FAILS, NOT_RUN, NOT_JUDGED = "holds", "does not hold", "not run", "not judged"
VERDICTS = (HOLDS, FAILS, NOT_RUN, NOT_JUDGED)


@dataclass(frozen=True)
class Outcome:
    """A claim's verdict with what was measured (``other``: the ordering's second side)."""

    claim: Claim
    verdict: str
    value: Interval
    other: Interval | None = None
    cells: int = 0  # the cells (rows of ``df``) the claim's filter matches, whatever their status
    other_cells: int = 0  # the same for the ordering's second side
    unmatched: tuple[str, ...] = ()  # ``key=value`` of the filters no seed that ran matches
    difference: Interval | None = None  # a separated ordering's paired per-batch difference

    def measured(self) -> str:
        """The measured value in words: ``38.12 ± 35.20 (n=4)``, ``3/4 = 0.75 [0.30, 0.95]``."""
        hint = f" (none with {', '.join(self.unmatched)})" if self.unmatched else ""
        if self.verdict == NOT_RUN and not self.value.n:
            if self.cells:  # they ran; the metric has no value on them (LPIPS without weights)
                return f"{self.claim.metric} n/a on the {self.cells} cell(s) that ran"
            return "no cell ran" + hint  # a hint names a misspelt label, most often
        text = _show(self.claim.metric, self.value)
        if self.other is not None:
            text += " vs " + _show(self.claim.metric, self.other) + (
                hint if not self.other.n and not self.other_cells else "")
        if self.difference is not None:
            text += "; paired difference " + _show(self.claim.metric, self.difference)
        return text

    @property
    def without_value(self) -> bool:
        """Whether a side of the claim has seeds that ran but none gives a value (every one
        crashed with no floor for the metric): unlike a side with no seeds, a break."""
        return (self.cells > 0 and not self.value.n) or (
            self.other is not None and self.other_cells > 0 and not self.other.n)

    def row(self) -> dict[str, Any]:
        """The claim's row of ``check.json``."""
        c = self.claim
        return {"claim": c.id, "paper": c.paper, "sentence": c.sentence,
                "reported": c.reported or "n/a", "measured": self.measured(),
                "verdict": self.verdict, "metric": c.metric, "expectation": c.expectation(),
                "where": c.where, "value": _numbers(self.value),
                "other": None if self.other is None else _numbers(self.other),
                "difference": None if self.difference is None else _numbers(self.difference),
                **({"note": c.note} if c.note else {})}


def _numbers(iv: Interval) -> dict[str, Any]:
    return {"mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n}


def _show(metric: str, iv: Interval) -> str:
    if iv.mean is None:
        return f"n/a (n={iv.n})"
    digits = 2 if metric in (SUCCESS, RISK_INDEX) else _digits(metric)
    if metric == SUCCESS:  # a Wilson interval: not symmetric about the rate
        wins = iv.mean * iv.n  # a private batch pooling cells adds its share of successes
        count = f"{round(wins)}" if abs(wins - round(wins)) < 1e-9 else f"{wins:.1f}"
        bounds = "n/a" if iv.low is None else f"{iv.low:.2f}, {iv.high:.2f}"
        return f"{count}/{iv.n} = {iv.mean:.2f} [{bounds}]"
    if metric == RISK_INDEX:
        return f"{iv.mean:.4f}"
    return f"{iv.format(digits)} (n={iv.n})"  # a share: [its Wilson interval]


def _digits(metric: str) -> int:
    return next(m.digits for m in table_metrics() if m.name == metric)


def claims_frame(records: list[dict[str, Any]], metrics: set[str]) -> pd.DataFrame:
    """One row per seed that ran (skipped cells left out), with the filter columns as text and
    a ``value:<metric>`` column per metric asked for."""
    df = records_frame(records)
    if df.empty:
        return df
    cols: dict[str, pd.Series] = {}
    for name in sorted(metrics - {SUCCESS, RISK_INDEX}):
        m = next(m for m in table_metrics() if m.name == name)
        parts = [seed_values(g, name, m.higher_is_better, no_floor_value=m.no_floor_value)["value"]
                 for _, g in scenarios(df)]
        cols[name] = pd.concat(parts) if parts else pd.Series(dtype=float)
    ran = df[df["status"].isin(SEED_STATUSES)].copy()
    for name, values in cols.items():
        ran[f"value:{name}"] = values.reindex(ran.index)
    if SUCCESS in metrics:  # a seed that did not finish did not succeed; one whose setup
        # failed was never attacked (left out, as the tables leave it)
        ran[f"value:{SUCCESS}"] = [
            math.nan if never_attacked(s, e) else
            1.0 if s == "ok" and isinstance(v, (bool, np.bool_)) and v else 0.0
            for s, v, e in zip(ran["status"], ran["success"], ran["error"])]
    if RISK_INDEX in metrics:
        ran[f"value:{RISK_INDEX}"] = _risk_indices(records, ran)
    for axis in WHERE:
        ran[axis] = ran[axis].map(lambda v: "" if v is None or (isinstance(v, float)
                                                                 and math.isnan(v)) else str(v))
    return ran


def _risk_indices(records: list[dict[str, Any]], ran: pd.DataFrame) -> list[float]:
    from bench.leaderboard.tables import risk_indices

    index = risk_indices(records)  # unrounded: the table's four decimals could pass a bound
    return [index.get((a, d), float("nan")) for a, d in zip(ran["arch"], ran["dataset"])]


def where_mask(df: pd.DataFrame, where: dict[str, list[str]]) -> pd.Series:
    """Rows whose every column named in ``where`` has one of its values (label or, for
    attack/defense/arch/dataset, registered name)."""
    keep = pd.Series(True, index=df.index)
    for key, wanted in where.items():
        hit = df[key].isin(wanted)
        if key in NAMED:
            hit |= df[f"{key}_name"].isin(wanted)
        keep &= hit
    return keep


def unmatched_filters(df: pd.DataFrame, claim: Claim) -> tuple[str, ...]:
    """The claim's filters (``where``, then ``better_than``) under which no row of ``df`` at
    all falls, as ``key=value`` texts (one per key, its values joined by ``|``); none when
    ``df`` is empty (nothing ran: no filter is to blame)."""
    out: list[str] = []
    if df.empty:
        return ()
    for where in (claim.where, claim.better_than or {}):
        for key, wanted in where.items():
            if not where_mask(df, {key: wanted}).any():
                text = f"{key}={'|'.join(wanted)}"
                if text not in out:
                    out.append(text)
    return tuple(out)


def evaluate(claim: Claim, df: pd.DataFrame) -> Outcome:
    """The claim's verdict on the seeds of ``df`` (from :func:`claims_frame`)."""
    higher = True if claim.metric in (SUCCESS, RISK_INDEX) else next(
        m.higher_is_better for m in table_metrics() if m.name == claim.metric)
    value = _interval(df, claim.where, claim.metric)
    if claim.better_than is None:
        if value.mean is None:
            return Outcome(claim, NOT_RUN, value)
        ok = (value.mean >= claim.at_least if claim.at_least is not None
              else value.mean <= claim.at_most)  # type: ignore[operator]
        return Outcome(claim, HOLDS if ok else FAILS, value)
    other = _interval(df, {**claim.where, **claim.better_than}, claim.metric)
    if value.mean is None or other.mean is None:
        return Outcome(claim, NOT_RUN, value, other)
    if claim.separated:
        if value.half is None or other.half is None:  # n < 2: an interval overlaps nothing
            return Outcome(claim, NOT_JUDGED, value, other)
        difference = _paired_difference(df, claim)
        if difference is not None:
            ok = difference.low > 0 if higher else difference.high < 0  # type: ignore[operator]
            return Outcome(claim, HOLDS if ok else FAILS, value, other, difference=difference)
        ok = clearly_better(value, other, higher)
    else:
        ok = value.mean > other.mean if higher else value.mean < other.mean
    return Outcome(claim, HOLDS if ok else FAILS, value, other)


def _interval(df: pd.DataFrame, where: dict[str, list[str]], metric: str) -> Interval:
    if df.empty:
        return Interval(None, None, None, 0)
    cells = df[where_mask(df, where)]
    if metric == RISK_INDEX:  # a property of the architecture: no spread over seeds
        values = cells[f"value:{metric}"].dropna()
        mean = float(values.mean()) if len(values) else None
        return Interval(mean, mean, mean, len(values))
    values = cells[f"value:{metric}"]
    if "scenario_seed" in cells:  # one value per private batch: pooled cells are no new seed
        values = per_private_batch(values, cells["scenario_seed"])
    if metric == SUCCESS:
        return wilson_interval(values)
    return metric_interval(values, is_share(metric))


def _batch_means(df: pd.DataFrame, where: dict[str, list[str]], metric: str) -> pd.Series:
    """A side's finite values averaged per private batch, keyed by scenario seed (empty where
    a cell has none: it cannot be paired)."""
    cells = df[where_mask(df, where)]
    if "scenario_seed" not in cells:
        return pd.Series(dtype=float)
    means = per_private_batch(cells[f"value:{metric}"], cells["scenario_seed"])
    unpaired = any(str(k).startswith(UNBATCHED) for k in means.index)
    return pd.Series(dtype=float) if unpaired else means


def _paired_difference(df: pd.DataFrame, claim: Claim) -> Interval | None:
    """The t-interval of the per-private-batch differences of a separated ordering's two
    sides, where both ran on the same (two or more) batches; ``None`` otherwise (a success
    rate or a share keeps Wilson's intervals: a t-interval of 0/1 differences is a point;
    an architecture property has no seeds to pair)."""
    if claim.metric in (SUCCESS, RISK_INDEX) or claim.better_than is None \
            or is_share(claim.metric):
        return None
    a = _batch_means(df, claim.where, claim.metric)
    b = _batch_means(df, {**claim.where, **claim.better_than}, claim.metric)
    if len(a) < 2 or set(a.index) != set(b.index):
        return None
    return t_interval((a - b.reindex(a.index)).tolist())


def check_claims(claims: list[Claim], records: list[dict[str, Any]]) -> list[Outcome]:
    """Every claim's outcome on ``records``, in the claims' order, with how many of their
    seeds the claim's filter matched."""
    df = claims_frame(records, {c.metric for c in claims})
    for c in claims:
        _check_modality(c, df)
        _check_names(c, df, records)

    def seeds(where: dict[str, list[str]] | None) -> int:
        return 0 if df.empty or where is None else int(where_mask(df, where).sum())

    return [replace(evaluate(c, df), cells=seeds(c.where),
                    other_cells=seeds(None if c.better_than is None
                                      else {**c.where, **c.better_than}),
                    unmatched=unmatched_filters(df, c))
            for c in claims]


def _check_modality(claim: Claim, df: pd.DataFrame) -> None:
    """Refuse a claim on a metric of another modality than every cell it names (ROUGE on
    image cells read "not run", as if the cells were missing)."""
    if claim.metric in (SUCCESS, RISK_INDEX) or df.empty:
        return
    named = df.loc[where_mask(df, claim.where), "modality"]
    modality = next(m.modality for m in table_metrics() if m.name == claim.metric)
    if len(named) and not (named == modality).any():
        raise ClaimsError(f"claim {claim.id}: {claim.metric} is a metric of {modality} cells, "
                          f"and the cells it names are {named.iloc[0]} cells")


COMPONENTS = ("attack", "defense", "arch", "dataset")
"""The ``where`` columns whose values name registered components."""


def _check_names(claim: Claim, df: pd.DataFrame, records: list[dict[str, Any]]) -> None:
    """Warn of a ``where`` value that matches no record and names a component neither
    registered here nor in any record: most often a typo (``attack: dlgg`` had read "not
    run" for ever, in silence). It stays "not run", not refused: a plug-in installed on
    another machine and not run yet is named so too, and the file's other claims still
    count."""
    from bench.leaderboard.where import split_outside_parentheses
    from bench.registry import REGISTRIES, suggest, warn

    for key in COMPONENTS:
        values = [v for side in (claim.where, claim.better_than or {}) for v in side.get(key, [])
                  if df.empty or not where_mask(df, {key: [v]}).any()]
        if not values:
            continue
        seen = {str(p.get("name")) for r in records for p in (  # skipped cells' too
            r.get(key) if key == "defense" else [r.get(key)]) or [] if isinstance(p, dict)}
        known = sorted(seen | set(REGISTRIES[f"{key}s"].names()))
        for value in values:
            links = split_outside_parentheses(value, "+") if key == "defense" else [value]
            for link in links:  # a label, or a table's row label: "idlg [granted labels]"
                name = re.split(r"[(\[]", link, maxsplit=1)[0].strip()
                if name not in known:
                    warn(f"check: claim {claim.id}: {key} {value!r}: no registered {key} and "
                         f"no record's is named {name!r}{suggest(name, known)}")
                    break

