"""Summaries over seeds: per (defense, attack) means with 95% t-intervals (failed seeds at
their floor), the strongest attack against each defense, ranks shared where intervals
overlap, and the utility track's paired accuracy drop."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pandas as pd

from bench.leaderboard.frames import FAILED, scenarios
from bench.leaderboard.uncertainty import (
    BATCH_FLOOR,
    MISSING,
    NO_FLOOR_VALUE,
    OWN_FLOOR,
    SCENARIO_FLOOR,
    Interval,
    metric_interval,
    never_attacked_count,
    pool_floors,
    seed_values,
    shared_ranks,
    t_interval,
)
from bench.metrics import Metric, get_metric, list_metrics
from bench.metrics.base import is_share

HEADLINE = "psnr"  # the metric attacks and defenses are ranked by
TEXT_HEADLINE = "rouge1"  # … in a text scenario
FLOOR_SOURCES = (OWN_FLOOR, BATCH_FLOOR, SCENARIO_FLOOR, NO_FLOOR_VALUE)


def is_reference(attack_name: str) -> bool:
    """Whether the registered attack ``attack_name`` is a reference row that reads no update
    (``Attack.reference``); a plug-in not installed here is taken for a real attack."""
    from bench.registry import ATTACKS, LeakbenchError

    try:
        return bool(getattr(ATTACKS.get(attack_name).cls, "reference", False))
    except LeakbenchError:
        return False


def headline() -> type[Metric]:
    """The ranking metric's registry entry (its direction decides every sort)."""
    return get_metric(HEADLINE)


def summarize_attacks(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (defense, attack): every per-item metric's mean over all seeds run, its 95%
    interval (t; Wilson's for a share: ``<m>_ci_low``, ``<m>_ci_high``), the seeds in it
    (``<m>_n``) and the mean over finished seeds only (``<m>_converged``). A diverged, failed
    or timed-out seed enters at its floor (:func:`~bench.leaderboard.uncertainty.seed_values`,
    pooled over ``cells``, one scenario); ``n_floor`` counts those, ``n_missing`` the ones with
    no floor to use (left out of the means, still counted under ``diverged``/``failed``), both
    on the scenario's ranking metric (ROUGE-1 for text, else PSNR), and ``<m>_n_missing`` per
    metric (LPIPS has no floor: the grey guess is not scored with it). Skipped cells are no
    seeds. A cell that failed before its attack ran (setup: data, victim, client update or
    defense) measured nothing: left out of the means (``n_missing``) and of the success rate,
    whose denominator is ``n_attacked``; it still counts under ``failed``."""
    ran = cells[cells["status"] != "skipped"]
    text = "modality" in cells and len(cells) > 0 and bool((cells["modality"] == "text").all())
    ranked = TEXT_HEADLINE if text else HEADLINE
    metrics = list_metrics(kind="per_item")
    floors = {m.name: pool_floors(cells, m.name, m.higher_is_better) for m in metrics
              if m.name in cells}  # one pool, the scenario: its floors once
    rows = []
    for (defense, attack), g in ran.groupby(["defense", "attack"], sort=True):
        ok = g[g["status"] == "ok"]
        row: dict = {"defense": defense, "attack": attack,
                     "reference": "attack_name" in g and is_reference(g["attack_name"].iloc[0])}
        for m in metrics:
            if m.name not in g:
                row.update({m.name: None, f"{m.name}_n": 0})
                continue
            values = seed_values(g, m.name, m.higher_is_better, floors=floors[m.name],
                                 no_floor_value=m.no_floor_value)
            iv = metric_interval(values["value"], m.share)
            row.update({m.name: iv.mean, f"{m.name}_ci_low": iv.low,
                        f"{m.name}_ci_high": iv.high, f"{m.name}_n": iv.n,
                        f"{m.name}_converged": _mean(ok[m.name], m.share),
                        f"{m.name}_n_missing": int((values["source"] == MISSING).sum())})
            if m.name == ranked:
                row["n_floor"] = int(values["source"].isin(FLOOR_SOURCES).sum())
                row["n_missing"] = int((values["source"] == MISSING).sum())
        n_success = int(ok["success"].fillna(False).astype(bool).sum())
        n_attacked = len(g) - never_attacked_count(g)
        row.update({
            "success": n_success / n_attacked if n_attacked else None,
            "n_success": n_success, "n_attacked": n_attacked,
            "n": len(g), "n_ok": len(ok),
            "diverged": int((g["status"] == "diverged").sum()),
            "failed": int(g["status"].isin(FAILED).sum()),
            "time": _median(ok["attack_seconds"]),
            "grad_evals": _median(ok["grad_evals"]),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def interval(row: pd.Series | dict, name: str) -> Interval:
    """The interval of column ``name`` in a summary row (built by :func:`summarize_attacks`
    or :func:`utility_summary`)."""
    def get(key: str) -> float | None:
        v = row.get(key)
        return None if v is None or pd.isna(v) else float(v)

    n = row.get(f"{name}_n")
    n = 0 if n is None or pd.isna(n) else int(n)
    return Interval(get(name), get(f"{name}_ci_low"), get(f"{name}_ci_high"), n,
                    centred=not is_share(name))  # a share's is Wilson's (metric_interval)


def _mean(s: pd.Series, share: bool = False) -> float | None:
    """The mean as the headline computes it (:func:`metric_interval`: summed with
    ``math.fsum``, independent of the cells' order; a share's values read into [0, 1])."""
    return metric_interval(pd.to_numeric(s, errors="coerce"), share).mean


def _median(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.median()) if len(s) else None


def defense_order(label: str) -> tuple[int, str]:
    """``none`` first, then the defenses by label."""
    return (0 if label == "none" else 1, label)


def strongest_attacks(summary: pd.DataFrame, h: type[Metric] | None = None) -> pd.DataFrame:
    """Per defense: the attack with the best mean headline metric (``h``, default PSNR)
    against it (ties: by name), reference rows left out where a real attack ran (a guess
    that reads no update says nothing of the defense); defenses ordered from the most to the
    least protective, unscored ones last."""
    h = h or headline()
    rows = []
    for _, g in summary.groupby("defense", sort=True):
        if "reference" in g and not g["reference"].astype(bool).all():
            g = g[~g["reference"].astype(bool)]
        scored = g[g[h.name].notna()]
        if scored.empty:
            best = g.sort_values("attack").iloc[0].to_dict()
            best[h.name] = None
        else:
            best = scored.sort_values([h.name, "attack"], ascending=[not h.higher_is_better, True],
                                      kind="stable").iloc[0].to_dict()
        best["attacks"] = len(g)
        rows.append(best)
    out = pd.DataFrame(rows)
    # a defense no attack produced a score against ranks last, never first
    value = out[h.name].astype(float)
    out["_key"] = (value if h.higher_is_better else -value).fillna(float("inf"))
    return out.sort_values(["_key", "defense"], kind="stable").drop(columns="_key")


def rank_attacks(summary: pd.DataFrame, h: type[Metric] | None = None) -> pd.DataFrame:
    """``summary`` ordered per defense (``none`` first) from the strongest attack to the
    weakest by mean headline metric (``h``, default PSNR; unscored last, ties by name), with
    the ranks each attack shares with those its interval overlaps: ``rank_best``,
    ``rank_worst``."""
    h = h or headline()
    out = summary.assign(_d=summary["defense"].map(defense_order))
    value = out[h.name].astype(float)
    out["_p"] = (value if h.higher_is_better else -value).fillna(-float("inf"))
    out = out.sort_values(["_d", "_p", "attack"], ascending=[True, False, True],
                          kind="stable").drop(columns=["_d", "_p"])
    return _with_ranks(out, "defense", h.higher_is_better, h.name)


def rank_defenses(best: pd.DataFrame, h: type[Metric] | None = None) -> pd.DataFrame:
    """The rows of :func:`strongest_attacks` (already ordered) with shared ranks: a defense
    is better the worse its strongest attack does."""
    h = h or headline()
    return _with_ranks(best.assign(_all=0), "_all", not h.higher_is_better, h.name) \
        .drop(columns="_all")


def _with_ranks(frame: pd.DataFrame, by: str, higher_is_better: bool, name: str = HEADLINE
                ) -> pd.DataFrame:
    """``frame`` with ``rank_best``/``rank_worst`` per group of ``by``, in its row order,
    from the intervals of column ``name``."""
    best = pd.Series(0, index=frame.index, dtype=int)
    worst = pd.Series(0, index=frame.index, dtype=int)
    for _, g in frame.groupby(by, sort=False):
        ranks = shared_ranks([interval(r, name) for _, r in g.iterrows()],
                             higher_is_better)
        best[g.index] = [b for b, _ in ranks]
        worst[g.index] = [w for _, w in ranks]
    return frame.assign(rank_best=best, rank_worst=worst)


def utility_summary(util: pd.DataFrame, dataset: str, arch: str) -> pd.DataFrame:
    """Per defense: mean accuracy, paired drop against ``none`` on the same scenarios, cosine,
    each with its 95% t-interval (``<col>_ci_low``, ``<col>_ci_high``, ``<col>_n``).

    Runs whose training diverged count at chance accuracy, and so do failed or timed-out
    runs where the scenario's chance level is known (dropping them would flatter an
    unstable defense). Pairs are matched on the scenario seed (same initialisation and data
    order), not on the seed index, so records of other suites or settings never pair up.
    Records of one training setting only (a merged store may hold several; 300 steps and
    30 steps have different accuracies): the one with the most records that ran (skipped
    ones are no runs), then the most records, ties by name. The
    result's ``attrs`` name it (``utility_setting``) and count the records of the others
    (``utility_left_out``: setting → records).
    """
    mine = util[(util["dataset"] == dataset) & (util["arch"] == arch)]
    settings = mine["setting"].fillna("").value_counts() if "setting" in mine \
        else pd.Series(dtype=int)
    ran = mine.loc[mine["status"] != "skipped", "setting"].fillna("").value_counts() \
        if "setting" in mine and "status" in mine else settings
    # the most records that ran (a merged store's skipped records are no runs), then the
    # most records; a tie goes to a recorded setting, then by name
    chosen = min(settings.index, key=lambda s: (-ran.get(s, 0), -settings[s], s == "", s)) \
        if len(settings) else None
    if chosen is not None:
        mine = mine[mine["setting"].fillna("") == chosen]
    summary = _utility_rows(mine)
    summary.attrs["utility_setting"] = chosen
    summary.attrs["utility_left_out"] = {s: int(n) for s, n in sorted(settings.items())
                                         if s != chosen}
    return summary


def _utility_rows(mine: pd.DataFrame) -> pd.DataFrame:
    """:func:`utility_summary` over the records of one dataset, arch and setting."""
    g = mine[mine["status"].isin(["ok", "diverged", *FAILED])].copy()
    g["accuracy"] = g["accuracy"].astype(float)  # all integers (0 or 1): an int column
    chance = pd.to_numeric(mine["chance"], errors="coerce").dropna() if "chance" in mine \
        else pd.Series(dtype=float)
    failed = g["status"].isin(FAILED)
    if len(chance):
        g.loc[failed, "accuracy"] = float(chance.max())
    else:
        g = g[~failed]
    if g.empty:
        return pd.DataFrame(columns=["defense", "accuracy", "drop", "update_cosine"])
    # one run per (defense, scenario seed) is the design; records without a scenario cannot
    # pair, and repeated ones (merged stores) are averaged rather than misaligned
    keyed = g[g["scenario"].notna()]
    base = keyed[keyed["defense"] == "none"].groupby("scenario")["accuracy"].mean()
    rows = []
    for defense, d in g.groupby("defense", sort=True):
        paired = d[d["scenario"].notna()].groupby("scenario")["accuracy"].mean()
        common = paired.index.intersection(base.index)
        eps = pd.to_numeric(d["epsilon"], errors="coerce").dropna() if "epsilon" in d \
            else pd.Series(dtype=float)
        # ε of the utility run itself (its q and T; the same for every seed of the defense)
        row: dict = {"defense": defense,
                     "utility_epsilon": float(eps.iloc[0]) if len(eps) else None}
        for name, values in (("accuracy", paired),
                             ("drop", base[common] - paired[common]),
                             ("update_cosine", pd.to_numeric(d["update_cosine"],
                                                             errors="coerce"))):
            iv = t_interval(list(values))
            row.update({name: iv.mean, f"{name}_ci_low": iv.low, f"{name}_ci_high": iv.high,
                        f"{name}_n": iv.n})
        rows.append(row)
    return pd.DataFrame(rows)


def scenario_summaries(df: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame, pd.DataFrame]]:
    """Per scenario with attack rows to show: its key, its cells and their summary (what every
    table, figure and export iterates over). Inside :func:`shared_summaries` a frame of the
    same cells is summarised once (a leaderboard's tables and figures each ask), and every
    caller gets copies, so one that edits them changes no other's."""
    if not _memo:
        yield from _summaries(df)
        return
    memo = _memo[-1]
    key = (tuple(df.index), tuple(df["cell_id"]) if "cell_id" in df else (), tuple(df.columns))
    if key not in memo:
        memo[key] = list(_summaries(df))
    for k, g, summary in memo[key]:
        yield k, g.copy(), summary.copy()


def _summaries(df: pd.DataFrame) -> Iterator[tuple[tuple, pd.DataFrame, pd.DataFrame]]:
    for key, g in scenarios(df):
        summary = summarize_attacks(g)
        if not summary.empty:
            yield key, g, summary


_memo: list[dict] = []  # the open shared_summaries scopes' memos


@contextlib.contextmanager
def shared_summaries() -> Iterator[None]:
    """A scope (one leaderboard's rendering) in which frames of the same cells, from the same
    records, share their scenario summaries."""
    _memo.append({})
    try:
        yield
    finally:
        _memo.pop()

