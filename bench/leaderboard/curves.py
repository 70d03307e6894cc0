"""Quality against compute: each attack's PSNR at the snapshots it kept, per scenario.

Attacks keep a few estimates during their run; the pipeline scores them after the attack
(``curve`` in the record: evaluations, seconds, PSNR). Averaged over seeds, the points show
how much an attack gains from more budget, and compare attacks at equal compute, which is
how attacks of different cost should be compared. Undefended cells only: the curve
measures the attack, not a defense.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from bench.leaderboard.frames import (
    attack_row_labels,
    record_scenario,
    row_label,
    scenario_slug,
)
from bench.leaderboard.tables import Table

ALONE = "alone"  # the time share of a record that ran in no batched pass


def _stop(record: dict[str, Any], final: dict[str, Any]) -> dict[str, Any]:
    """Where a run stopped, in its snapshots' units: a converged run's own evaluations (times
    the restarts it ran, as its snapshots count them) and seconds, not its pass's; else its
    final."""
    converged = record.get("converged_at") or {}
    if converged.get("grad_evals") is None or converged.get("seconds") is None:
        return final
    restarts = int((record.get("attack_info") or {}).get("restarts_run") or 1)
    return {**final, "grad_evals": converged["grad_evals"] * restarts,
            "seconds": converged["seconds"]}


def _division(shares: set[str]) -> str:
    """How a scenario's time was divided between its cells (the records'
    ``trial_batch.time_share``; ``alone`` for a record that ran in no batched pass), for its
    note."""
    batched = shares - {ALONE}
    if not batched:
        return "each cell's own attack time: every cell ran alone"
    if batched <= {"equal"}:
        words = "a batched pass's time divided equally between its cells"
    else:
        words = "a batched pass's time divided between its cells by their trials' clocks" + (
            "" if batched == {"trial clock"} else " or, where a record says so, equally")
    return words + ("; a cell that ran alone, its own time" if ALONE in shares else "")


def curve_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per (scenario, attack, point): mean evaluations, seconds and PSNR over seeds,
    and how many seeds the point averages. Snapshots are matched by their evaluation count
    (the attack's schedule, the same for every seed); a seed that stopped (converged) before a
    point of the schedule enters it with its final estimate, at the evaluations and seconds it
    had spent when it stopped, so early convergence does not drop the seeds that converged;
    the final estimates form the last point, wherever each run stopped (the only point where
    every run stopped before the first snapshot). Closed-form attacks (no gradient
    evaluations) have no curve."""
    # per scenario and attack, each run's snapshots by evaluation count, its stop, its final
    runs: dict[tuple, list[tuple[dict, dict, dict]]] = defaultdict(list)
    time_shares: dict[tuple, set[str]] = defaultdict(set)  # per scenario, its passes' rule
    labels = attack_row_labels(records)
    for r in records:
        if r.get("kind", "attack") != "attack" or r.get("status") != "ok":
            continue
        curve = r.get("curve") or []
        final = next((p for p in curve if p.get("final")), None)
        if final is None or r.get("defense_label") != "none":
            continue
        key = (*record_scenario(r), row_label(r, labels))
        kept = {p["grad_evals"]: p for p in curve if not p.get("final")}
        runs[key].append((kept, _stop(r, final), final))
        batch = r.get("trial_batch")
        alone = batch is None or bool(batch.get("fallback"))  # a failed pass's cells re-ran alone
        time_shares[key[:-1]] |= {ALONE if alone else batch.get("time_share") or "equal"}
    points: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for key, group in runs.items():
        schedule = sorted({at for kept, _, _ in group for at in kept})
        if not schedule and not any(final["grad_evals"] for _, _, final in group):
            continue  # a closed-form attack: no iterations to draw against
        for kept, stop, final in group:
            for at in schedule:
                if at in kept:
                    points[(*key, at)].append(kept[at])
                elif stop["grad_evals"] <= at:  # stopped before this point: its final
                    points[(*key, at)].append(stop)
            points[(*key, math.inf)].append(final)
    rows = []
    for (*key, at), ps in points.items():
        n = len(ps)
        rows.append({"dataset": key[0], "arch": key[1], "batch_size": key[2], "mode": key[3],
                     "bn_mode": key[4], "victim": key[5], "attack": key[6], "at": at,
                     "grad_evals": sum(p["grad_evals"] for p in ps) / n,
                     "seconds": sum(p["seconds"] for p in ps) / n,
                     "psnr": sum(p["psnr"] for p in ps) / n, "n": n,
                     "time_share": frozenset(time_shares[tuple(key[:-1])])})
    if not rows:
        return pd.DataFrame(rows)
    frame = pd.DataFrame(rows).sort_values(
        ["dataset", "arch", "batch_size", "mode", "bn_mode", "victim", "attack", "at"],
        key=lambda c: c.map(str) if c.name != "at" else c, kind="stable")
    frame["point"] = frame.groupby(
        ["dataset", "arch", "batch_size", "mode", "bn_mode", "victim", "attack"],
        dropna=False).cumcount()
    return frame.reset_index(drop=True)


def _time_words(g: pd.DataFrame) -> str:
    """The note's words on a scenario's time, from its rows of :func:`curve_frame`."""
    return _division(set().union(*g["time_share"]))


def curve_tables(records: list[dict[str, Any]], out_dir: Path | None = None) -> list[Table]:
    """Per scenario, a table of each attack's PSNR at its snapshots; with ``out_dir`` also
    the figure (PSNR against evaluations and against seconds), linked from the table."""
    frame = curve_frame(records)
    if frame.empty:
        return []
    tables = []
    scenario = ["dataset", "arch", "batch_size", "mode", "bn_mode", "victim"]
    for key, g in frame.groupby(scenario, sort=True, dropna=False):
        rows = []
        for attack, a in g.groupby("attack", sort=True):
            a = a.sort_values("point")
            rows.append({"attack": attack, "PSNR (dB) at evaluations → seconds per cell": "; ".join(
                f"{p.psnr:.1f} @ {p.grad_evals:.0f} → {p.seconds:.2f}s"
                + (f" (n={p.n})" if p.n != a["n"].max() else "") for p in a.itertuples())})
        title = (f"Quality versus compute — {key[0]}, {key[1]}, batch {key[2]}, {key[3]}"
                 f" (BN {key[4]}), victim {key[5]}, undefended")
        note = ("Mean over the finished seeds (a diverged or failed run left no estimates) of "
                "the PSNR of the estimates each attack kept during its run, scored after it, "
                "at the mean evaluations and seconds "
                f"({_time_words(g)}); the last point is the final estimate.")
        pictures = []
        if out_dir is not None:
            from bench.plots import plot_quality_curves

            rel = f"plots/quality_curve_{scenario_slug(key)}.png"
            plot_quality_curves(g, out_dir / rel, title.split(" — ")[1])
            pictures.append(("PSNR against evaluations and seconds", rel))
        tables.append(Table(title, pd.DataFrame(rows), note, pictures))
    return tables
