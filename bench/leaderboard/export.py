"""``leakbench export``: one flat CSV row per cell, or (``aggregate``) one row per attack-table
row with every mean's 95% interval and n, in a fixed column and row order."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.leaderboard.aggregate import (
    rank_attacks,
    rank_defenses,
    scenario_summaries,
    strongest_attacks,
)
from bench.leaderboard.frames import SCENARIO, no_attack_records, records_frame
from bench.leaderboard.text_tables import modality_headline
from bench.metrics import list_metrics
from bench.outputs import write_output
from bench.registry import LeakbenchError
from bench.store import load_records

# Frame columns that serve the tables only (a picture path, the threshold, a plot axis).
INTERNAL_COLUMNS = ("picture", "success_psnr", "strength", "line")
# Whole-number columns: pandas holds them as floats as soon as one row has none (a skipped
# cell's grad_evals), so they are written as nullable integers, every digit kept.
COUNT_COLUMNS = ("batch_size", "seed", "scenario_seed", "iterations", "grad_evals",
                 "peak_memory_bytes", "rank_best", "rank_worst", "defense_rank_best",
                 "defense_rank_worst", "n", "n_ok", "diverged", "failed", "n_floor",
                 "n_missing", "n_success", "n_attacked")


def export_columns(df: pd.DataFrame) -> list[str]:
    """The CSV's columns: the record frame's, in its order (identity, the registered metrics,
    cost, provenance), less the table-only ones. A new metric is a new column, with no list
    to edit."""
    return [c for c in df.columns if c not in INTERNAL_COLUMNS]


def aggregate_columns() -> list[str]:
    """The aggregated CSV's columns: the scenario, the row, its ranks and counts, then per
    registered per-item metric its mean over every seed run, 95% interval (t; a share's
    Wilson), n and the mean
    over finished seeds only; last the attack's cost. ``reference``: the row's attack reads
    no update (a guess; never ``strongest`` where a real attack ran)."""
    per_metric = [f"{m.name}{suffix}" for m in list_metrics(kind="per_item")
                  for suffix in ("", "_ci_low", "_ci_high", "_n", "_converged")]
    return [*SCENARIO, "defense", "attack", "reference", "rank_best", "rank_worst", "strongest",
            "defense_rank_best", "defense_rank_worst", "n", "n_ok", "diverged", "failed",
            "n_floor", "n_missing", *per_metric, "n_success", "n_attacked", "success", "time",
            "grad_evals"]


def aggregate_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (scenario, defense, attack) of the Attacks tables, in their order; the
    row of each defense's strongest attack (the Defenses table's) has ``strongest`` set and
    the defense's shared ranks."""
    parts = []
    for key, cells, summary in scenario_summaries(df):
        h = modality_headline(cells["modality"].iloc[0])  # ranked as its tables rank it
        ranked = rank_attacks(summary, h)
        defenses = rank_defenses(strongest_attacks(summary, h), h)
        top = {(r["defense"], r["attack"]): (r["rank_best"], r["rank_worst"])
               for _, r in defenses.iterrows()}
        pair = list(zip(ranked["defense"], ranked["attack"]))
        ranked = ranked.assign(
            **dict(zip(SCENARIO, key)),
            strongest=[p in top for p in pair],
            defense_rank_best=[top[p][0] if p in top else None for p in pair],
            defense_rank_worst=[top[p][1] if p in top else None for p in pair])
        parts.append(ranked)
    cols = aggregate_columns()
    if not parts:
        return pd.DataFrame(columns=cols)
    out = pd.concat(parts, ignore_index=True)
    return out.reindex(columns=cols).astype({"defense_rank_best": "Int64",
                                             "defense_rank_worst": "Int64"})


def export(out_dir: Path, fmt: str = "csv", output: Path | None = None,
           aggregate: bool = False) -> Path:
    """One flat row per cell (``cells.csv``), or with ``aggregate`` one row per table row
    (``aggregate.csv``, :func:`aggregate_frame`), in a stable column and row order."""
    if fmt != "csv":
        raise LeakbenchError(f"unknown export format {fmt!r} (expected csv)")
    records = load_records(Path(out_dir))
    df = records_frame(records)
    if df.empty:  # no records, or only utility ones: say which
        raise LeakbenchError(no_attack_records(Path(out_dir), records))
    name = "aggregate.csv" if aggregate else "cells.csv"
    path = Path(output) if output else Path(out_dir) / name
    table = aggregate_frame(df) if aggregate else df[export_columns(df)]
    write_output(path, exact_csv(table))
    return path


def exact_csv(table: pd.DataFrame) -> str:
    """``table`` as CSV with no digit lost: floats as Python writes them (the shortest text
    that reads back as the same float), whole-number columns as integers, a structure (a
    text cell's pairs, a success rule) as JSON (pandas wrote Python's repr, which no JSON
    reader takes)."""
    counts: dict[str, pd.Series] = {}
    for col in table.columns:
        if table[col].map(lambda v: isinstance(v, (dict, list))).any():
            counts[col] = table[col].map(lambda v: json.dumps(v, sort_keys=True,
                                                              ensure_ascii=False)
                                         if isinstance(v, (dict, list)) else v)
    for col in COUNT_COLUMNS:
        if col in table.columns:
            values = pd.to_numeric(table[col], errors="coerce")
            kept = values.dropna()
            if len(kept) == table[col].notna().sum() and (kept == kept.round()).all() and (
                    kept.abs() <= 2 ** 53).all():  # beyond, a float holds no whole number
                counts[col] = values.astype("Int64")
    return table.assign(**counts).to_csv(index=False, lineterminator="\n")
