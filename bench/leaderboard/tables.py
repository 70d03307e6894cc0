"""The leaderboard's tables as data: attacks per scenario, defenses per scenario (worst case
over attacks, with utility and the Pareto front), and the architectures' rank analysis.

Metric columns, their headers, decimals and sort direction come from :mod:`bench.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attacks.rgap_rank import parse_chain, risk_index
from bench.leaderboard.aggregate import (
    defense_order,
    headline,
    strongest_attacks,
    summarize_attacks,
    utility_summary,
)
from bench.leaderboard.frames import scenario_title, scenarios
from bench.metrics import Metric, format_value, list_metrics
from bench.registry import ARCHS, DATASETS


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    note: str = ""
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path)


def attack_metrics(summary: pd.DataFrame) -> list[type[Metric]]:
    """The metric columns of an attack table: the per-item leaderboard metrics, leaving out
    a weights-needing one (LPIPS) that no cell of the table has a value for."""
    return [m for m in list_metrics(kind="per_item") if m.leaderboard
            and (not m.needs_weights or summary[m.name].notna().any())]


def defense_metrics() -> list[type[Metric]]:
    """The metric columns of a defense table: the strongest attack's image metrics that every
    finished cell has (on the leaderboard, no weights file needed: PSNR, SSIM)."""
    return [m for m in list_metrics(kind="per_item") if m.leaderboard
            and m.inputs == "images" and not m.needs_weights]


def _pictures(g: pd.DataFrame) -> list[tuple[str, str]]:
    ok = g[(g["status"] == "ok") & g["picture"].notna()]
    if ok.empty:
        return []
    h = headline()
    ordered = ok.sort_values([h.name, "cell_id"], ascending=[not h.higher_is_better, True],
                             kind="stable")
    best, worst = ordered.iloc[0], ordered.iloc[-1]

    def value(r: Any) -> str:
        return f"{r[h.name]:.{h.digits}f}" + (f" {h.unit}" if h.unit else "")

    pics = [(f"best: {best['attack']} vs {best['defense']}, seed {best['seed']}, "
             f"{value(best)}", best["picture"])]
    if worst["cell_id"] != best["cell_id"]:
        pics.append((f"worst: {worst['attack']} vs {worst['defense']}, seed {worst['seed']}, "
                     f"{value(worst)}", worst["picture"]))
    return pics


def attack_tables(df: pd.DataFrame) -> list[Table]:
    """Per scenario: every attack against every defense, ranked per defense by the headline
    metric (mean over finished seeds)."""
    h = headline()
    tables = []
    for key, g in scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        summary["_d"] = summary["defense"].map(defense_order)
        value = summary[h.name] if h.higher_is_better else -summary[h.name].astype(float)
        summary["_p"] = value.fillna(-1e9)
        summary = summary.sort_values(["_d", "_p", "attack"], ascending=[True, False, True],
                                      kind="stable")
        summary["rank"] = summary.groupby("defense", sort=False).cumcount() + 1
        shown = attack_metrics(summary)
        rows = []
        for _, r in summary.iterrows():
            row: dict[str, Any] = {"Defense": r["defense"], "Rank": int(r["rank"]),
                                   "Attack": r["attack"]}
            for m in shown:
                row[m.header()] = m.format(r[m.name])
                if m.name == h.name:
                    row["± std"] = m.format(r[f"{h.name}_std"])
            row.update({
                "Success": f"{r['n_success']}/{r['n']}",
                "Median time (s)": format_value(r["time"], 2),
                "Grad evals": format_value(r["grad_evals"], 0),
                "Diverged": int(r["diverged"]), "Failed": int(r["failed"]),
            })
            rows.append(row)
        tables.append(Table(f"Attacks · {scenario_title(key)}", pd.DataFrame(rows),
                            pictures=_pictures(g)))
    return tables


def defense_tables(df: pd.DataFrame, util: pd.DataFrame | None = None,
                   plots: dict[tuple, str] | None = None) -> list[Table]:
    """Per scenario: defenses ranked by the strongest attack against each (worst case over
    attacks), with the utility track's accuracy, its paired drop and the Pareto front."""
    from bench.plots import pareto_front

    h = headline()
    shown = defense_metrics()
    tables = []
    for key, g in scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        best = strongest_attacks(summary)
        us = utility_summary(util, key[0], key[1]) if util is not None and len(util) else None
        has_utility = us is not None and not us.empty
        front: set[str] = set()
        if has_utility:
            best = best.merge(us, on="defense", how="left")
            both = best[best[h.name].notna() & best["accuracy"].notna()]
            front = set(pareto_front(both.rename(columns={"defense": "defense_label"})))
        epsilon = g.dropna(subset=["epsilon"]).groupby("defense")["epsilon"].first()
        rows = []
        for rank, (_, r) in enumerate(best.iterrows(), start=1):
            row: dict[str, Any] = {"Rank": rank, "Defense": r["defense"],
                                   "Strongest attack": r["attack"]}
            row.update({m.header(): m.format(r[m.name]) for m in shown})
            row.update({"Success": f"{r['n_success']}/{r['n']}",
                        "Attacks tried": int(r["attacks"])})
            if len(epsilon):
                eps = epsilon.get(r["defense"])
                row["ε"] = "–" if eps is None else format_value(eps, 2)
            if has_utility:
                row.update({"Accuracy": format_value(r["accuracy"], 3),
                            "Δ acc": format_value(r["drop"], 3),
                            "Update cos": format_value(r["update_cosine"], 3),
                            "Pareto": "★" if r["defense"] in front else ""})
            rows.append(row)
        direction = "lower" if h.higher_is_better else "higher"
        note = f"Ranked by the best mean {h.label} any attack reaches ({direction} is better)."
        if len(epsilon):
            note += (" ε: the differential-privacy budget at the defense's δ for its configured "
                     "sampling rate and steps (Opacus's accountant), a whole training run's.")
        if has_utility:
            note += (" Accuracy: test accuracy after the utility track's training with defended "
                     "updates (mean over seeds); Δ acc: its drop against `none` on the same "
                     "seeds; Update cos: cosine between defended and clean updates; ★: on the "
                     "privacy–utility Pareto front (lower PSNR, higher accuracy).")
        pics = [(f"figure: {scenario_title(key)}", plots[key])] if plots and key in plots \
            else []
        tables.append(Table(f"Defenses · {scenario_title(key)}", pd.DataFrame(rows),
                            note=note, pictures=pics))
    return tables


def architecture_table(records: list[dict[str, Any]]) -> Table | None:
    """Per (arch, dataset) of the records: parameters and R-GAP's rank-analysis risk index,
    computed from the architecture alone (no attack involved)."""
    seen: dict[tuple[str, str], tuple[dict, dict]] = {}
    for r in records:
        if r.get("kind", "attack") == "attack":
            seen.setdefault((r["arch_label"], r["dataset_label"]), (r["arch"], r["dataset"]))
    rows = []
    for (arch_label, dataset_label), (arch, dataset) in sorted(seen.items()):
        try:
            ds = DATASETS.get(dataset["name"]).cls(**dataset["params"])
            meta = ds.meta()
            model = ARCHS.get(arch["name"]).cls(**arch["params"]).build(meta.shape,
                                                                         meta.num_classes)
        except Exception as e:  # an entry that no longer builds: say so, keep the table
            rows.append({"Arch": arch_label, "Input": dataset_label, "Parameters": "n/a",
                         "Risk index": "n/a", "Note": f"{type(e).__name__}: {e}"})
            continue
        n_params = sum(p.numel() for p in model.parameters())
        index = risk_index(model, meta.shape)
        _, reason = parse_chain(model, tuple(meta.shape))
        rows.append({"Arch": arch_label,
                     "Input": f"{dataset_label} ({'×'.join(map(str, meta.shape))})",
                     "Parameters": f"{n_params:,}",
                     "Risk index": "n/a" if pd.isna(index) else f"{index:.4f}",
                     "Note": "" if not pd.isna(index) else f"outside R-GAP's scope: {reason}"})
    if not rows:
        return None
    return Table("Architectures", pd.DataFrame(rows),
                 note="Risk index: leakbench's summary of R-GAP's rank analysis (Zhu & Blaschko "
                      "2021), the product over layers of rank/unknowns of each layer's "
                      "system; 1 means the gradient determines the input "
                      "(`leakbench rank ARCH` shows the per-layer counts).")
