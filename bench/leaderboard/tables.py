"""The leaderboard's tables as data: attacks per scenario, defenses per scenario (worst case
over attacks, with utility and the Pareto front), and the architectures' rank analysis.

Metric columns, their headers, decimals and sort direction come from :mod:`bench.metrics`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from attacks.rgap_rank import MAX_RANK_PARAMETERS, parse_chain, risk_index
from bench.leaderboard.aggregate import (
    headline,
    interval,
    rank_attacks,
    rank_defenses,
    scenario_summaries,
    strongest_attacks,
    utility_summary,
)
from bench.leaderboard.epsilon import epsilon_cell, epsilon_column, epsilon_note
from bench.leaderboard.frames import scenario_title
from bench.leaderboard.notes import missing_note
from bench.leaderboard.uncertainty import format_rank
from bench.metrics import Metric, fixed, format_value, list_metrics
from bench.records import record_modality
from bench.registry import ARCHS, DATASETS


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    note: str = ""
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path)
    examples: list[tuple[str, str]] = field(default_factory=list)  # (caption, cell id)


def scored_metrics(metrics: list[type[Metric]], frame: pd.DataFrame,
                   keep: type[Metric]) -> list[type[Metric]]:
    """``metrics`` less those that no row of ``frame`` has a value for, ``keep`` (the
    headline) always: a weights-needing metric without its weights file (LPIPS), or a plug-in
    metric installed after the records were scored, would be a column of n/a, and the
    committed tables would change with what is installed."""
    return [m for m in metrics if m is keep
            or (m.name in frame and frame[m.name].notna().any())]


def attack_metrics(summary: pd.DataFrame) -> list[type[Metric]]:
    """The metric columns of an attack table: the per-item leaderboard metrics some row of
    it has a value for (:func:`scored_metrics`)."""
    return scored_metrics([m for m in list_metrics("image", "per_item") if m.leaderboard],
                          summary, headline())


def defense_metrics(summary: pd.DataFrame) -> list[type[Metric]]:
    """The metric columns of a defense table: the strongest attack's image metrics that every
    finished cell has (on the leaderboard, no weights file needed: PSNR, SSIM), where some
    row has a value (:func:`scored_metrics`)."""
    return scored_metrics([m for m in list_metrics("image", "per_item") if m.leaderboard
                           and m.inputs == "images" and not m.needs_weights],
                          summary, headline())


def _pictures(g: pd.DataFrame) -> list[tuple[str, str]]:
    ok = g[(g["status"] == "ok") & g["picture"].notna()]
    if ok.empty:
        return []
    h = headline()
    ordered = ok.sort_values([h.name, "cell_id"], ascending=[not h.higher_is_better, True],
                             kind="stable")
    best, worst = ordered.iloc[0], ordered.iloc[-1]

    def value(r: Any) -> str:
        return fixed(r[h.name], h.digits) + (f" {h.unit}" if h.unit else "")

    pics = [(f"best: {best['attack']} vs {best['defense']}, seed {best['seed']}, "
             f"{value(best)}", best["picture"])]
    if worst["cell_id"] != best["cell_id"]:
        pics.append((f"worst: {worst['attack']} vs {worst['defense']}, seed {worst['seed']}, "
                     f"{value(worst)}", worst["picture"]))
    return pics


IMAGE_FLOOR = "the score of a uniform mid-grey guess, 0.5 in every pixel"


def share_clause(shown: Sequence[type[Metric]]) -> str:
    """The note's clause on the intervals of the shown columns of shares (Wilson's), naming
    them; empty where none is shown (the text tables' note had explained a label accuracy
    they never show, and not their token accuracy and exact match)."""
    shares = [m.label for m in shown if m.share]
    if not shares:
        return ""
    one = len(shares) == 1
    return (f"; {' and '.join(shares)}, {'a share' if one else 'shares'}: "
            f"[{'its' if one else 'their'} 95% Wilson interval{'' if one else 's'}], which "
            f"{'does' if one else 'do'} not shrink to a point where every seed is 0 or 1")


def attack_note(shown: Sequence[type[Metric]], floor: str = IMAGE_FLOOR,
                rank: str = "Rank") -> str:
    """The attack tables' note: the intervals of the metrics ``shown``, the floor failed
    seeds count at, the rank."""
    return ("Each metric: mean over the n seeds run ± the half-width of its 95% Student-t "
            "interval (n/a for n = 1)" + share_clause(shown) + ". Median time and grad "
            "evals: over the finished seeds. A diverged, failed or timed-out seed counts at "
            f"its floor ({floor}) and under Diverged/Failed; none is dropped. {rank}: one "
            "number where the attack's interval overlaps no other's; a shared range a–b "
            "otherwise, from 1 + the attacks whose interval lies wholly above its own to the "
            "last rank less those wholly below.")


def reference_notes(summary: pd.DataFrame) -> tuple[str, str]:
    """The clauses the attack and the defense tables add where ``summary`` has reference
    rows (attacks that read no update, ``Attack.reference``); empty otherwise."""
    refs = sorted(set(summary.loc[summary["reference"].astype(bool), "attack"])) \
        if "reference" in summary else []
    if not refs:
        return "", ""
    names = ", ".join(refs)
    return (f" {names}: a reference that reads no update (a guess from public knowledge); an "
            "attack ranked below it recovered nothing that guess does not give.",
            f" Reference rows ({names}: they read no update) are left out wherever a real "
            "attack ran.")


def _cell(m: type[Metric], r: pd.Series | dict, name: str | None = None) -> str:
    """A metric's mean ± 95% half-width in a table cell."""
    return interval(r, name or m.name).format(m.digits)


def _converged(h: type[Metric], r: pd.Series | dict) -> str:
    """The headline mean over finished seeds only, where it differs from the mean over all."""
    if int(r["n_ok"]) == int(r["n"]):
        return ""
    return h.format(r[f"{h.name}_converged"]) + f" (n={int(r['n_ok'])})"


def _granted(g: pd.DataFrame) -> dict[str, str]:
    """Each attack's grants in a scenario (bench.grants), or {} when no attack had one."""
    if "granted" not in g or not g["granted"].astype(bool).any():
        return {}
    return {a: ", ".join(sorted({x for v in cells["granted"] for x in str(v).split(",") if x}))
            for a, cells in g.groupby("attack", sort=True)}


def attack_tables(df: pd.DataFrame) -> list[Table]:
    """Per scenario: every attack against every defense, ranked per defense by the headline
    metric (mean over every seed run, failures at their floor), ties where intervals
    overlap."""
    h = headline()
    tables = []
    for key, g, summary in scenario_summaries(df):
        summary = rank_attacks(summary)
        shown = attack_metrics(summary)
        unstable = bool((summary["n_ok"] < summary["n"]).any())
        granted = _granted(g)
        rows = []
        for _, r in summary.iterrows():
            row: dict[str, Any] = {"Defense": r["defense"],
                                   "Rank": format_rank(r["rank_best"], r["rank_worst"]),
                                   "Attack": r["attack"], "n": int(r[f"{h.name}_n"])}
            if granted:  # the threat model's grants, where any attack of the scenario had one
                row = {**row, "Granted": granted.get(r["attack"]) or "–"}
            for m in shown:
                row[m.header()] = _cell(m, r)
                if m.name == h.name and unstable:
                    row[f"{m.header()} converged only"] = _converged(h, r)
            row.update({
                "Success": f"{r['n_success']}/{r['n_attacked']}",
                "Median time (s)": format_value(r["time"], 2),
                "Grad evals": format_value(r["grad_evals"], 0),
                "Diverged": int(r["diverged"]), "Failed": int(r["failed"]),
            })
            rows.append(row)
        note = attack_note(shown) + missing_note(summary, shown) + reference_notes(summary)[0]
        if unstable:
            note += (f" {h.label} converged only: the mean over finished seeds alone (n of "
                     "them), shown where a seed diverged or failed.")
        tables.append(Table(f"Attacks · {scenario_title(key)}", pd.DataFrame(rows),
                            note=note, pictures=_pictures(g)))
    return tables


def defense_tables(df: pd.DataFrame, util: pd.DataFrame | None = None,
                   plots: dict[tuple, str] | None = None) -> list[Table]:
    """Per scenario: defenses ranked by the strongest attack against each (worst case over
    attacks, ties where intervals overlap), with the utility track's accuracy, its paired
    drop and the Pareto front."""
    h = headline()
    tables = []
    for key, g, summary in scenario_summaries(df):
        best = rank_defenses(strongest_attacks(summary))
        shown = defense_metrics(best)
        best, us, front = utility_join(best, util, key, "psnr")
        has_utility = us is not None
        unstable = bool((best["n_ok"] < best["n"]).any())
        epsilon, eps_column = epsilon_column(best, g, has_utility)
        rows = []
        for _, r in best.iterrows():
            row: dict[str, Any] = {"Rank": format_rank(r["rank_best"], r["rank_worst"]),
                                   "Defense": r["defense"], "Strongest attack": r["attack"],
                                   "n": int(r[f"{h.name}_n"])}
            for m in shown:
                row[m.header()] = _cell(m, r)
                if m.name == h.name and unstable:
                    row[f"{m.header()} converged only"] = _converged(h, r)
            row.update({"Success": f"{r['n_success']}/{r['n_attacked']}",
                        "Attacks tried": int(r["attacks"])})
            if len(epsilon):
                row[eps_column] = epsilon_cell(epsilon, r["defense"])
            if has_utility:
                row.update(utility_cells(r, front))
            rows.append(row)
        direction = "lower" if h.higher_is_better else "higher"
        note = (f"Ranked by the best mean {h.label} any attack reaches ({direction} is "
                "better), over every seed run (failures at their floor); n: its seeds; ± and "
                "the shared ranks as in the Attacks tables; the metrics and Success are that "
                "strongest attack's (another may succeed on seeds it misses: see the Attacks "
                "tables).") + missing_note(best) + reference_notes(summary)[1]
        if unstable:
            note += (f" {h.label} converged only: that attack's mean over finished seeds "
                     "alone, shown where a seed diverged or failed.")
        note += epsilon_note(epsilon, eps_column, g, rows)
        if has_utility:
            note += utility_note(us, "PSNR")
        pics = [(f"figure: {scenario_title(key)}", plots[key])] if plots and key in plots \
            else []
        tables.append(Table(f"Defenses · {scenario_title(key)}", pd.DataFrame(rows),
                            note=note, pictures=pics))
    return tables


def utility_join(best: pd.DataFrame, util: pd.DataFrame | None, key: tuple, privacy: str
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None, set[str]]:
    """``best`` (one row per defense of scenario ``key``) with the utility track's summary of
    that dataset and architecture merged in, the summary (None where no utility record
    covers them), and the defenses on the privacy–utility Pareto front, ``privacy`` being the
    attack's metric column (lower is more private)."""
    from bench.plots import pareto_front

    us = utility_summary(util, key[0], key[1]) if util is not None and len(util) else None
    if us is None or us.empty:
        return best, None, set()
    best = best.merge(us, on="defense", how="left")
    both = best[best[privacy].notna() & best["accuracy"].notna()]
    return best, us, set(pareto_front(both.rename(columns={"defense": "defense_label"}),
                                      privacy=privacy))


def utility_cells(r: pd.Series, front: set[str]) -> dict[str, str]:
    """A Defenses-table row's utility columns (see :func:`utility_note`)."""
    from bench.plots import ACCURACY_DIGITS

    n_acc = r.get("accuracy_n")
    return {"Accuracy": interval(r, "accuracy").format(ACCURACY_DIGITS),
            "Δ acc": interval(r, "drop").format(ACCURACY_DIGITS),
            "Update cos": interval(r, "update_cosine").format(ACCURACY_DIGITS),
            "n (utility)": "0" if pd.isna(n_acc) else str(int(n_acc)),
            "Pareto": "★" if r["defense"] in front else ""}


def utility_note(us: pd.DataFrame, privacy: str) -> str:
    """What a Defenses table's utility columns mean (``privacy``: the attack metric's label)."""
    return (" Accuracy: test accuracy after the utility track's training with defended "
            "updates (mean over the n (utility) seeds); Δ acc: its drop against `none` "
            "on the same seeds (paired); Update cos: cosine between defended and clean "
            f"updates; ★: on the privacy–utility Pareto front (lower {privacy}, higher "
            "accuracy, means as printed).") + _other_settings_note(us)


def _other_settings_note(us: pd.DataFrame) -> str:
    """Where the store holds utility records of several training settings: which one the
    table shows and what it leaves out (accuracies of different settings do not average)."""
    left_out = us.attrs.get("utility_left_out") or {}
    if not left_out:
        return ""
    others = "; ".join(f"{setting or 'no setting recorded'} ({n} records)"
                       for setting, n in left_out.items())
    return (f" Utility of the setting {us.attrs['utility_setting'] or 'none recorded'} (the "
            f"one with the most records) only; left out: {others}.")


def _built_architectures(records: list[dict[str, Any]]) -> Iterator[tuple[str, str, Any]]:
    """Per (arch, dataset) label pair of the image attack records, sorted: the model, built
    anew, and its input shape (the records' ``input_meta``; records before it: the dataset's
    metadata, built), or the exception that stopped the build."""
    seen: dict[tuple[str, str], tuple[dict, dict, Any]] = {}
    shapes: dict[str, Counter[str]] = {}  # per dataset label: one input
    for r in records:
        if r.get("kind", "attack") == "attack" and record_modality(r) == "image":
            key = (r["arch_label"], r["dataset_label"])
            if key not in seen or (seen[key][2] is None and r.get("input_meta")):
                seen[key] = (r["arch"], r["dataset"], r.get("input_meta"))
            if r.get("input_meta"):
                meta = r["input_meta"]
                shapes.setdefault(r["dataset_label"], Counter())[
                    f"{'×'.join(map(str, meta['shape']))}, {meta['num_classes']} classes"] += 1
    for (arch_label, dataset_label), (arch, dataset, known) in sorted(seen.items()):
        try:
            told = shapes.get(dataset_label, Counter())
            if len(told) > 1:  # one dataset label, one input: a record was edited or damaged
                raise ValueError("the records disagree on the input: " + "; ".join(
                    f"{what} ({n} records)" for what, n in told.most_common()))
            if known:
                shape, classes = tuple(known["shape"]), int(known["num_classes"])
            else:
                meta = DATASETS.get(dataset["name"]).cls(**dataset["params"]).meta()
                shape, classes = tuple(meta.shape), meta.num_classes
            built = ARCHS.get(arch["name"]).cls(**arch["params"])
            size = built.parameter_count(shape, classes)
            if size is not None and size > MAX_RANK_PARAMETERS:  # a hand-edited input_meta:
                raise ValueError(f"{size:,} parameters at {'×'.join(map(str, shape))}, "  # GBs
                                 f"above the {MAX_RANK_PARAMETERS:,} the table builds")
            model = built.build(shape, classes)
        except Exception as e:  # an entry that no longer builds
            yield arch_label, dataset_label, e
            continue
        yield arch_label, dataset_label, (model, shape)


def risk_indices(records: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    """R-GAP's risk index per (arch label, dataset label) of the records (NaN where the
    architecture is out of R-GAP's scope or no longer builds), unrounded."""
    return {(a, d): float("nan") if isinstance(built, Exception)
            else risk_index(built[0], built[1])
            for a, d, built in _built_architectures(records)}


def architecture_table(records: list[dict[str, Any]]) -> Table | None:
    """Per (arch, dataset) of the records: parameters and R-GAP's rank-analysis risk index,
    computed from the architecture alone (no attack involved); image records only."""
    rows = []
    for arch_label, dataset_label, built in _built_architectures(records):
        if isinstance(built, Exception):  # say so, keep the table
            rows.append({"Arch": arch_label, "Input": dataset_label, "Parameters": "n/a",
                         "Risk index": "n/a", "Note": f"{type(built).__name__}: {built}"})
            continue
        model, shape = built
        n_params = sum(p.numel() for p in model.parameters())
        index = risk_index(model, shape)
        _, reason = parse_chain(model, shape)
        rows.append({"Arch": arch_label,
                     "Input": f"{dataset_label} ({'×'.join(map(str, shape))})",
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
