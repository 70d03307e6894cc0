"""Summaries over seeds: per (defense, attack) means, the strongest attack against each
defense, and the utility track's paired accuracy drop."""

from __future__ import annotations

import pandas as pd

from bench.leaderboard.frames import FAILED
from bench.metrics import Metric, get_metric, list_metrics

HEADLINE = "psnr"  # the metric attacks and defenses are ranked by (and its ± std is shown)


def headline() -> type[Metric]:
    """The ranking metric's registry entry (its direction decides every sort)."""
    return get_metric(HEADLINE)


def summarize_attacks(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (defense, attack): metrics over seeds. Non-finished runs count against success."""
    ran = cells[cells["status"] != "skipped"]
    per_item = [m.name for m in list_metrics(kind="per_item")]
    rows = []
    for (defense, attack), g in ran.groupby(["defense", "attack"], sort=True):
        ok = g[g["status"] == "ok"]
        row = {"defense": defense, "attack": attack}
        row.update({name: _mean(ok[name]) if name in ok else None for name in per_item})
        row[f"{HEADLINE}_std"] = _std(ok[HEADLINE])
        row.update({
            "success": float(ok["success"].fillna(False).astype(bool).sum()) / len(g),
            "n_success": int(ok["success"].fillna(False).astype(bool).sum()),
            "n": len(g), "n_ok": len(ok),
            "diverged": int((g["status"] == "diverged").sum()),
            "failed": int(g["status"].isin(FAILED).sum()),
            "time": _median(ok["attack_seconds"]),
            "grad_evals": _median(ok["grad_evals"]),
        })
        rows.append(row)
    return pd.DataFrame(rows)


def _mean(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


def _std(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.std(ddof=0)) if len(s) else None


def _median(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.median()) if len(s) else None


def defense_order(label: str) -> tuple[int, str]:
    """``none`` first, then the defenses by label."""
    return (0 if label == "none" else 1, label)


def strongest_attacks(summary: pd.DataFrame) -> pd.DataFrame:
    """Per defense: the attack with the best mean headline metric against it (ties: by name);
    defenses ordered from the most to the least protective, unscored ones last."""
    h = headline()
    rows = []
    for _, g in summary.groupby("defense", sort=True):
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


def utility_summary(util: pd.DataFrame, dataset: str, arch: str) -> pd.DataFrame:
    """Per defense: mean accuracy, paired drop against ``none`` on the same scenarios, cosine.

    Runs whose training diverged count at chance accuracy (dropping them would flatter an
    unstable defense). Pairs are matched on the scenario seed (same initialisation and data
    order), not on the seed index, so records of other suites or settings never pair up.
    """
    g = util[(util["dataset"] == dataset) & (util["arch"] == arch)
             & util["status"].isin(["ok", "diverged"])]
    if g.empty:
        return pd.DataFrame(columns=["defense", "accuracy", "drop", "update_cosine"])
    base = g[g["defense"] == "none"].set_index("scenario")["accuracy"]
    rows = []
    for defense, d in g.groupby("defense", sort=True):
        paired = d.set_index("scenario")["accuracy"]
        common = paired.index.intersection(base.index)
        drop = float((base[common] - paired[common]).mean()) if len(common) else None
        rows.append({"defense": defense, "accuracy": float(paired.mean()), "drop": drop,
                     "update_cosine": float(d["update_cosine"].mean())})
    return pd.DataFrame(rows)
