"""Uncertainty over seeds, and the floor that makes every seed count.

- :func:`t_interval`: the mean of a row's seeds and its two-sided 95% Student-t interval;
- :func:`per_private_batch`: one value per private batch, where a filter pools cells that
  share one (other defenses, attacks or client modes on the same seed are no new seed);
- :func:`wilson_interval`: a success rate's interval (a t-interval of 0/1 values collapses to
  ± 0 at 0/n and n/n);
- :func:`shared_ranks`: ranks shared where intervals overlap (shown as ``2–3``);
- :func:`seed_values`: per cell, the value that enters a mean — the measured one for a
  finished cell, the floor (a mid-grey guess's score) for a diverged, failed or
  timed-out one, or the metric's set value where it has no floor (label accuracy: 0), so
  that no seed drops out of a mean.

The same inputs always give the same numbers: no resampling, no clock.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from scipy.stats import norm
from scipy.stats import t as student_t

from bench.metrics.base import fixed
from bench.stages import never_attacked

LEVEL = 0.95  # two-sided coverage of every interval in the tables
SEED_STATUSES = ("ok", "diverged", "error", "timeout")  # a skipped cell is no seed of its row
FLOORED = ("diverged", "error", "timeout")  # enter the means at the floor
FLOOR_PREFIX = "floor_"  # frame column of a record's floor_metrics[m]: floor_psnr, …

# where a cell's value came from (seed_values' ``source``)
MEASURED = "measured"
OWN_FLOOR = "floor"
BATCH_FLOOR = "floor of the same private batch"
SCENARIO_FLOOR = "lowest floor of the scenario"
NO_FLOOR_VALUE = "the metric's value for a failed seed"
MISSING = "missing"


@dataclass(frozen=True)
class Interval:
    """A mean over ``n`` seeds and its interval; ``low``/``high`` are None when n < 2."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    centred: bool = True  # a t-interval; Wilson's is not centred on its mean (shown [lo, hi])

    @property
    def half(self) -> float | None:
        """The interval's half-width (a t-interval is symmetric about the mean)."""
        return None if self.low is None or self.high is None else (self.high - self.low) / 2

    def format(self, digits: int) -> str:
        """``12.70 ± 6.39``; ``12.70 ± n/a`` for one seed (never ± 0); ``n/a`` for none;
        ``1.00 [0.34, 1.00]`` for an interval not centred on its mean (Wilson's)."""
        return interval_text(self.mean, self.low, self.high, digits, self.centred)


def interval_text(mean: float | None, low: float | None, high: float | None, digits: int,
                  centred: bool = True) -> str:
    """How a table shows a mean and its interval (:meth:`Interval.format`)."""
    if mean is None or math.isnan(mean):
        return "n/a"
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return f"{fixed(mean, digits)} ± n/a"
    if centred:
        return f"{fixed(mean, digits)} ± {fixed((high - low) / 2, digits)}"
    return f"{fixed(mean, digits)} [{fixed(low, digits)}, {fixed(high, digits)}]"


def t_interval(values: Sequence[float | None] | pd.Series, level: float = LEVEL) -> Interval:
    """Mean ± t(1 − (1 − level)/2, n − 1) · s/√n over the finite values (s: sample standard
    deviation, ddof 1). One value has a mean but no interval; none has neither."""
    x = _finite(values)
    if len(x) < 2:
        return _too_few(x)
    n = len(x)
    mean = math.fsum(x) / n
    half = float(student_t.ppf(0.5 + level / 2, n - 1)) * statistics.stdev(x) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _finite(values: Sequence[float | None] | pd.Series) -> list[float]:
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def _too_few(x: list[float]) -> Interval:
    """The interval of fewer than two values: a mean without bounds, or nothing."""
    return Interval(x[0], None, None, 1) if x else Interval(None, None, None, 0)


UNBATCHED = "cell "
"""The key prefix of a cell without a scenario seed in :func:`per_private_batch`: its own
batch, which no other cell shares (so no paired comparison can use it)."""


def per_private_batch(values: pd.Series, batches: pd.Series) -> pd.Series:
    """The mean of the finite ``values`` of each private batch, keyed by it (``batches``: the
    cells' ``scenario_seed``, as text; a cell without one is its own, ``UNBATCHED`` + its
    index). Cells on one private batch share its images and victim (a scenario seed leaves
    out the defense, the client and BatchNorm mode, and an attack starts from the same dummy
    data against every defense), so pooling them would narrow an interval without adding a
    seed."""
    v = pd.to_numeric(values, errors="coerce").astype(float)
    v = v[v.map(math.isfinite)]
    key = [f"{UNBATCHED}{i}" if pd.isna(b) else str(b)
           for i, b in zip(v.index, batches.reindex(v.index))]
    return v.groupby(pd.Series(key, index=v.index, dtype=object), sort=False).mean()


def wilson_interval(shares: Sequence[float] | pd.Series, level: float = LEVEL) -> Interval:
    """A success rate over ``n`` independent seeds (each 0 or 1, or a private batch's share)
    and its Wilson score interval (Wilson 1927): unlike a t-interval of 0/1 values it does
    not collapse to a point at 0/n or n/n (0/8: [0, 0.32]). One seed has no interval."""
    # a share a hair outside [0, 1] is rounding (the record check allows 1e-6): read at its bound
    x = [min(1.0, max(0.0, v)) for v in _finite(shares)]
    if len(x) < 2:
        return _too_few(x)
    n = len(x)
    p = math.fsum(x) / n
    z = float(norm.ppf(0.5 + level / 2))
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if p == 0 else max(0.0, centre - half)  # exact ends: no 3e-18 in check.json
    high = 1.0 if p == 1 else min(1.0, centre + half)
    return Interval(p, low, high, n, centred=False)


def metric_interval(values: Sequence[float | None] | pd.Series, share: bool = False
                    ) -> Interval:
    """A row's interval of a metric: Wilson's for a metric whose values are shares of trials
    (``Metric.share``: label accuracy, exact match, token accuracy), whose t-interval is a
    point where every seed is 0 or every seed is 1 ("1.00 ± 0.00" after two seeds, and
    "clearly better" than "0.00 ± 0.00"); Student's t otherwise."""
    return wilson_interval(values) if share else t_interval(values)


def clearly_better(a: Interval, b: Interval, higher_is_better: bool) -> bool:
    """Whether ``a``'s interval lies wholly on the better side of ``b``'s (no overlap; an
    undefined interval, n < 2, overlaps everything)."""
    if None in (a.low, a.high, b.low, b.high):
        return False
    if higher_is_better:
        return a.low > b.high  # type: ignore[operator]
    return a.high < b.low  # type: ignore[operator]


def shared_ranks(intervals: Sequence[Interval],
                 higher_is_better: bool = True) -> list[tuple[int, int]]:
    """Per entry, the ranks ``(best, worst)`` it could hold given the intervals.

    best = 1 + the entries whose interval lies wholly on the better side of its own;
    worst = the number of scored entries − those whose interval lies wholly on the worse
    side. Touching intervals overlap. An entry without a mean ranks after every scored one
    (best = scored + 1, worst = all). ``best == worst`` is an unshared rank.
    """
    total = len(intervals)
    scored = [iv for iv in intervals if iv.mean is not None]
    out = []
    for iv in intervals:
        if iv.mean is None:
            out.append((len(scored) + 1, total))
            continue
        above = sum(clearly_better(o, iv, higher_is_better) for o in scored)
        below = sum(clearly_better(iv, o, higher_is_better) for o in scored)
        out.append((1 + above, len(scored) - below))  # unscored entries rank below it
    return out


def format_rank(best: int, worst: int) -> str:
    """``2`` for an unshared rank, ``2–4`` for a shared one."""
    return str(best) if best == worst else f"{best}–{worst}"


@dataclass(frozen=True)
class PoolFloors:
    """The floors of a pool of cells that a floored seed may borrow: the worst one, and the
    worst one per private batch (``scenario_seed``); and the attacks that measured the metric
    on a finished cell of the pool (a metric without floors: see ``no_floor_value``)."""

    worst: float | None
    by_batch: dict
    reporting: frozenset = frozenset()


def pool_floors(pool: pd.DataFrame, metric: str, higher_is_better: bool = True) -> PoolFloors:
    """The floors of ``metric`` in ``pool`` (lowest for a higher-is-better metric: the least
    credit); computed once per scenario where many rows share its pool."""
    floors = _floors(pool, FLOOR_PREFIX + metric)
    worst = (floors.min() if higher_is_better else floors.max()) if len(floors) else None
    by_batch: dict = {}
    if len(floors) and "scenario_seed" in pool:
        seeds = pool.loc[floors.index, "scenario_seed"]
        grouped = floors.groupby(seeds)
        by_batch = (grouped.min() if higher_is_better else grouped.max()).to_dict()
    reporting: frozenset = frozenset()
    if metric in pool:
        attacks = pool["attack"] if "attack" in pool else pd.Series(None, index=pool.index)
        reporting = frozenset(a for a, s, v in zip(attacks, pool["status"], pool[metric])
                              if s == "ok" and not math.isnan(_number(v)))
    return PoolFloors(worst, by_batch, reporting)


def seed_values(cells: pd.DataFrame, metric: str, higher_is_better: bool = True,
                pool: pd.DataFrame | None = None,
                floors: PoolFloors | None = None,
                no_floor_value: float | None = None) -> pd.DataFrame:
    """Per seed of ``cells`` (skipped cells left out): the ``value`` of ``metric`` that enters
    the mean and its ``source``.

    A finished (``ok``) cell gives its measured value (NaN where the metric is n/a there,
    e.g. LPIPS without weights). A diverged, failed or timed-out cell gives, in this order:
    its own ``floor_metrics[metric]`` (frame column ``floor_<metric>``); the floor of a cell
    of ``pool`` on the same private batch (same ``scenario_seed``); the worst floor in
    ``pool`` (lowest for a higher-is-better metric: the least credit); else, when a finished
    cell of the same attack in ``pool`` measured the metric, ``no_floor_value`` (the
    metric's ``Metric.no_floor_value``: label accuracy has no floor, a failed seed recovered
    no labels); else NaN with source ``missing`` (left out of the mean, still counted as a
    failure). ``pool`` defaults to
    ``cells``; the leaderboard passes the whole scenario, or ``floors`` (its
    :func:`pool_floors`, where it has them already), never both. A cell that failed before
    its attack ran (its error's stage ``setup``: data, victim, client update or defense)
    measured nothing of the attack or the defense (:func:`bench.stages.never_attacked`; a
    task no worker began too): ``missing``, never a floor, so that a
    defense that raises in every cell is not ranked as the most private.
    """
    if pool is not None and floors is not None:
        raise ValueError("seed_values: pass pool or its floors, not both")
    if floors is None:
        floors = pool_floors(cells if pool is None else pool, metric, higher_is_better)
    worst, by_batch = floors.worst, floors.by_batch
    col = FLOOR_PREFIX + metric
    ran = cells["status"].isin(SEED_STATUSES).to_numpy()  # the frame is wide: no copy of it
    index = cells.index[ran]

    def column(name: str) -> list:  # plain lists: iterrows would build a Series per row
        return cells[name].to_numpy()[ran].tolist() if name in cells else [None] * len(index)

    values, sources = [], []
    for status, measured, floor, batch_seed, attack, error in zip(
            column("status"), column(metric), column(col), column("scenario_seed"),
            column("attack"), column("error")):
        if status == "ok":
            values.append(_number(measured))
            sources.append(MEASURED)
            continue
        if never_attacked(status, error):
            values.append(math.nan)  # nothing was measured: a broken defense is not private
            sources.append(MISSING)
            continue
        own = _number(floor)
        batch = by_batch.get(batch_seed)
        if not math.isnan(own):
            values.append(own)
            sources.append(OWN_FLOOR)
        elif batch is not None and not math.isnan(batch):
            values.append(float(batch))
            sources.append(BATCH_FLOOR)
        elif worst is not None:
            values.append(float(worst))
            sources.append(SCENARIO_FLOOR)
        elif no_floor_value is not None and attack in floors.reporting:
            values.append(float(no_floor_value))  # type: ignore[arg-type]
            sources.append(NO_FLOOR_VALUE)
        else:
            values.append(math.nan)
            sources.append(MISSING)
    return pd.DataFrame({"value": values, "source": sources}, index=index)


def never_attacked_count(cells: pd.DataFrame) -> int:
    """How many of ``cells`` failed before their attack ran (:func:`never_attacked`)."""
    return sum(map(never_attacked, cells["status"], cells["error"])) if "error" in cells else 0


def _floors(pool: pd.DataFrame, col: str) -> pd.Series:
    if col not in pool:
        return pd.Series(dtype=float)
    return pd.to_numeric(pool[col], errors="coerce").dropna()


def _number(v: object) -> float:
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return f if math.isfinite(f) else math.nan
