"""``leakbench diff A B``: compare two results folders row by row and cell by cell.

**Rows** are the Attacks-table rows, one per (scenario, defense, attack), with each chosen
metric's mean over every seed run and its 95% t-interval, exactly as the leaderboard and the
aggregated export compute them (:func:`bench.leaderboard.aggregate_frame`: failed seeds at
their floor). The metric is, unless ``--metric`` names others, each row's leaderboard metric
(PSNR for an image row, ROUGE-1 for a text row). For a row in both folders, per metric:

- **regression**: B's interval lies wholly on the worse side of A's (for PSNR, B's high end
  below A's low end; touching intervals overlap), the non-overlap test of the tables' shared
  ranks (:func:`bench.leaderboard.uncertainty.clearly_better`);
- **improvement**: B's interval lies wholly on the better side of A's;
- **unchanged**: the intervals overlap;
- **regression** too: A's row has a value and every seed of B's row failed with no floor to
  count at (a scenario whose cells all time out or die: their records have no
  ``floor_metrics``), so B has no value at all; **improvement** the reverse;
- where the share of the row's seeds that finished fell from A to B: a **regression** if
  the finished seeds alone are clearly worse too; if they are clearly better, the intervals
  with floors judge the mixed change; otherwise an improvement by those intervals is a
  **regression** (the failed seeds' floors, a mid-grey guess, can sit above a weak attack's
  finished values); where it rose, the mirror (``diff A B`` mirrors ``diff B A``);
- **not judged**: a side has no interval (fewer than two seeds with a value), so no change
  can be told from noise; listed only where the means differ;
- **metric n/a**: neither side has a value of the metric (PSNR of a text row); counted. A
  ``--metric`` with no value in any row of either folder is an error. A row in one folder
  only is **new** (only in B) or **missing** (only in A).

**Cells** are matched by cell id (every record, attack and utility): only in B is new, only
in A missing, and a cell in both whose status differs (``ok`` → ``diverged``, …) is a status
change. Cells whose status is the same but whose metric value differs are counted in the
summary and listed in the CSV (a re-run on another CPU changes them all; the rows say whether
that matters): an attack cell's on the chosen metrics, a utility cell's on its test accuracy
and update cosine.

**Utility rows** are each defense's test accuracy after the utility track's training, per
dataset, architecture and training setting (every setting, where the tables show one), with its
95% t-interval over the seeds (diverged and failed runs at chance, as the Defenses tables
count them), judged as the attack rows are, higher being better: an accuracy that collapsed
is a regression (it had been a list of changed cells, exit 0).

Suites are not part of the key: a folder is compared as the leaderboard shows it. A suite in
one folder only contributes new or missing cells and rows, and the summary names it. Both
folders are only read: a damaged record is named in a warning and left in place, never
quarantined (:func:`bench.store.load_records` with ``quarantine=False``). The exit status
is 1 when any row (attack or utility) regressed or any cell that finished (``ok``) in A
failed (``error``, ``timeout``) in B, else 0; bad input (a missing folder, no records, an
unknown or pooled metric) is a :class:`~bench.registry.LeakbenchError` (one line, exit 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.diff_verdicts import (
    IMPROVEMENT,
    REGRESSION,
    all_failed,
    finished_first,
    finished_verdict,
    judge,
)
from bench.leaderboard.aggregate import headline, interval, utility_summary
from bench.leaderboard.export import aggregate_frame
from bench.leaderboard.frames import (
    SCENARIO,
    attack_row_labels,
    record_scenario,
    records_frame,
    row_label,
    scenario_title,
    scenarios,
    utility_frame,
)
from bench.leaderboard.text_tables import modality_headline
from bench.leaderboard.uncertainty import Interval
from bench.metrics import resolve_per_item
from bench.paths import store_problem
from bench.records import FAILURE_STATUSES, record_modality
from bench.registry import LeakbenchError
from bench.store import RECORDS, load_records

ROW = [*SCENARIO, "defense", "attack"]
UTILITY_VALUES = ("accuracy", "update_cosine")  # what a utility cell's value change is on
UTILITY_ROW = ["dataset", "arch", "setting", "defense"]  # a utility row's key
UTILITY_METRIC = "accuracy"  # what a utility row is judged on (higher is better)
NOT_APPLICABLE = "metric n/a"  # the metric has no value in the row on either side
NEW, MISSING, STATUS, VALUE = "new", "missing", "status changed", "value changed"
FORMATS = ("markdown", "csv")


@dataclass(frozen=True)
class RowChange:
    """One row's comparison for one metric (``a``/``b`` None where the row is on one side)."""

    key: tuple
    metric: str
    change: str
    a: Interval | None
    b: Interval | None

    @property
    def delta(self) -> float | None:
        """B's mean minus A's, where both have one."""
        if self.a is None or self.b is None or self.a.mean is None or self.b.mean is None:
            return None
        return self.b.mean - self.a.mean


@dataclass(frozen=True)
class CellChange:
    """A cell new, missing, whose status changed, or whose metric value changed."""

    cell_id: str
    change: str
    label: str
    a_status: str | None
    b_status: str | None
    metric: str | None = None
    a_value: float | None = None
    b_value: float | None = None
    key: tuple | None = None  # the cell's ROW (scenario, defense, attack); None: a utility run


@dataclass
class Diff:
    """Everything ``leakbench diff`` found; :attr:`regressed` decides the exit status."""

    a: Path
    b: Path
    metrics: list[str]
    rows: list[RowChange] = field(default_factory=list)
    cells: list[CellChange] = field(default_factory=list)
    suites_a: list[str] = field(default_factory=list)
    suites_b: list[str] = field(default_factory=list)
    common: int | None = None  # the cells compared, under ``common``: those in both folders
    utility: list[RowChange] = field(default_factory=list)  # keyed UTILITY_ROW, on accuracy

    def row_changes(self, change: str) -> list[RowChange]:
        return [r for r in self.rows if r.change == change]

    def cell_changes(self, change: str) -> list[CellChange]:
        return [c for c in self.cells if c.change == change]

    def stopped_finishing(self) -> list[CellChange]:
        """Cells that finished in A and failed (error, timeout) in B."""
        return [c for c in self.cell_changes(STATUS)
                if c.a_status == "ok" and c.b_status in FAILURE_STATUSES]

    def utility_changes(self, change: str) -> list[RowChange]:
        return [r for r in self.utility if r.change == change]

    @property
    def regressed(self) -> bool:
        """A row regressed (an attack row, or a defense's utility accuracy), or a cell that
        finished in A failed in B (exit status 1)."""
        return any(r.change == REGRESSION for r in (*self.rows, *self.utility)) or \
            bool(self.stopped_finishing())


def read_folder(folder: Path, side: str) -> list[dict[str, Any]]:
    """Every sound record of ``folder`` (read-only: damaged ones are named, not moved)."""
    folder = Path(folder)
    if not folder.is_dir():  # missing, or a file
        raise LeakbenchError(f"diff: {side} {store_problem(folder)}")
    if not (folder / RECORDS).is_dir():
        raise LeakbenchError(f"diff: {side} {folder} holds no record store "
                             f"({folder / RECORDS} is missing)")
    records = load_records(folder, quarantine=False)
    if not records:
        raise LeakbenchError(f"diff: {side}: no records under {folder / RECORDS}")
    return records


def _rows(records: list[dict[str, Any]], labels: dict[str, str] | None = None
          ) -> dict[tuple, tuple[pd.Series, str]]:
    """Each Attacks-table row by key, with its modality ("image" or "text"); ``labels``: the
    rows' attack labels, decided over both folders so that a row keeps its key in each."""
    df = records_frame(records, labels)
    if df.empty:
        return {}
    modality = {key: g["modality"].iloc[0] for key, g in scenarios(df)}  # keyed as the rows
    agg = aggregate_frame(df)
    rows = {}
    for _, r in agg.iterrows():
        key = tuple(r[c] for c in ROW)
        rows[key] = (r, modality.get(key[:len(SCENARIO)], "image"))
    return rows


def _utility_rows(records: list[dict[str, Any]]) -> dict[tuple, Interval]:
    """Each defense's test accuracy after the utility track's training, per dataset,
    architecture and training setting, with its 95% t-interval over
    the seeds, diverged and failed runs at chance, as :func:`utility_summary` computes it."""
    util = utility_frame(records)
    util["setting"] = util["setting"].fillna("")
    rows: dict[tuple, Interval] = {}
    for dataset, arch, setting in sorted(set(zip(util["dataset"], util["arch"],
                                                 util["setting"]))):
        # every setting (the tables show one each; a folder with more records of another
        # had left the rows of the first new and missing, unjudged)
        summary = utility_summary(util[util["setting"] == setting], dataset, arch)
        for _, r in summary.iterrows():
            low, high = (None if pd.isna(r[c]) else float(r[c])
                         for c in ("accuracy_ci_low", "accuracy_ci_high"))
            mean = None if pd.isna(r["accuracy"]) else float(r["accuracy"])
            rows[(dataset, arch, setting, r["defense"])] = Interval(mean, low, high,
                                                                    int(r["accuracy_n"]))
    return rows


def _key(r: dict[str, Any], labels: dict[str, str]) -> tuple | None:
    """An attack cell's row key (``ROW``: its scenario, with batch size, client, BN mode and
    victim, then defense and its row's attack label, ``labels`` as the rows'); None for a
    utility run, which has no such row."""
    if r.get("kind", "attack") != "attack":
        return None
    return (*record_scenario(r), r.get("defense_label"), row_label(r, labels))


def _change(cid: str, change: str, r: dict[str, Any], labels: dict[str, str],
            a_status: str | None, b_status: str | None, *value: Any) -> CellChange:
    """A cell's change, named and keyed by its record ``r`` (:func:`_label`, :func:`_key`)."""
    key = _key(r, labels)
    return CellChange(cid, change, _label(r, key), a_status, b_status, *value, key=key)


def _label(r: dict[str, Any], key: tuple | None) -> str:
    """A cell in words: its scenario's title (two cells that differ only in batch size or
    client had read alike), defense, attack (a utility run, ``key`` None: "utility") and
    seed."""
    if key is None:
        parts = [str(r[k]) for k in ("dataset_label", "arch_label", "defense_label")
                 if r.get(k)] + ["utility"]
    else:
        parts = [scenario_title(key[:len(SCENARIO)]), *(str(k) for k in key[len(SCENARIO):])]
    return " · ".join(parts + ([f"seed {r['seed']}"] if "seed" in r else []))


def _value(r: dict[str, Any], metric: str) -> float | None:
    v = (r.get("metrics") or {}).get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _cells(a: list[dict[str, Any]], b: list[dict[str, Any]],
           metrics: list[str] | None, labels: dict[str, str]) -> list[CellChange]:
    """Cell changes; values compared on ``metrics``, or each record's leaderboard metric."""
    by_a = {r["cell_id"]: r for r in a}
    by_b = {r["cell_id"]: r for r in b}
    out = []
    for cid in sorted(by_a.keys() | by_b.keys()):
        ra, rb = by_a.get(cid), by_b.get(cid)
        if ra is None or rb is None:
            r = rb if ra is None else ra
            out.append(_change(cid, NEW if ra is None else MISSING, r, labels,
                               None if ra is None else ra["status"],
                               None if rb is None else rb["status"]))
        elif ra["status"] != rb["status"]:
            out.append(_change(cid, STATUS, ra, labels, ra["status"], rb["status"]))
        else:
            utility = ra.get("kind") == "utility"
            for m in UTILITY_VALUES if utility else \
                    metrics or [modality_headline(record_modality(ra)).name]:
                va, vb = _value(ra, m), _value(rb, m)
                if va != vb:
                    out.append(_change(cid, VALUE, ra, labels, ra["status"], rb["status"],
                                       m, va, vb))
    return out


def diff(a: Path, b: Path, metrics: list[str] | None = None, common: bool = False) -> Diff:
    """Compare results folder ``b`` against ``a`` (the reference) on ``metrics``, by default
    each row's leaderboard metric (PSNR for image rows, ROUGE-1 for text rows); ``common``:
    on the cells found in both alone (a run of some of a suite's cells against all of its
    records: the rows then pool the same seeds on both sides)."""
    chosen = resolve_per_item(metrics) if metrics else None
    rec_a, rec_b = read_folder(a, "A"), read_folder(b, "B")
    if common:
        shared = {r.get("cell_id") for r in rec_a} & {r.get("cell_id") for r in rec_b}
        if not shared:
            raise LeakbenchError(f"--common: {a} and {b} share no cell")
        rec_a = [r for r in rec_a if r.get("cell_id") in shared]
        rec_b = [r for r in rec_b if r.get("cell_id") in shared]
    labels = attack_row_labels(rec_a + rec_b)  # one key per row in both folders
    rows_a, rows_b = _rows(rec_a, labels), _rows(rec_b, labels)
    fin_a, fin_b = (_rows([r for r in rec if r.get("status") == "ok"], labels)  # no floors
                    for rec in (rec_a, rec_b))
    used: dict[str, None] = {}
    rows = []
    for key in sorted(rows_a.keys() | rows_b.keys()):
        ra, rb = rows_a.get(key), rows_b.get(key)
        modality = (ra or rb)[1]  # type: ignore[index]
        for m in chosen or [modality_headline(modality)]:
            used[m.name] = None
            ia = None if ra is None else interval(ra[0], m.name)
            ib = None if rb is None else interval(rb[0], m.name)
            if ia is None or ib is None:
                change = NEW if ia is None else MISSING
            elif ia.n == 0 and ib.n == 0:
                change = NOT_APPLICABLE
            elif ib.n == 0 and all_failed(rb[0]):  # type: ignore[index]
                change = REGRESSION  # no seed of B finished, none had a floor: no value
            elif ia.n == 0 and all_failed(ra[0]):  # type: ignore[index]
                change = IMPROVEMENT
            elif all_failed(rb[0]) and (ra[0].get("n_ok") or 0) > 0:  # type: ignore[index]
                # B finished no seed of the row: its floors (a mid-grey guess) can sit above
                # A's finished values, which had read as an improvement
                change = REGRESSION
            elif all_failed(ra[0]) and (rb[0].get("n_ok") or 0) > 0:  # type: ignore[index]
                change = IMPROVEMENT  # the mirror: finished values below A's floors
            else:
                fa, fb = (None if f.get(key) is None else f[key][0] for f in (fin_a, fin_b))
                change = finished_first(ra[0], rb[0],  # type: ignore[index]
                                        judge(ia, ib, m.higher_is_better),
                                        finished_verdict(fa, fb, m.name, m.higher_is_better))
            rows.append(RowChange(key, m.name, change, ia, ib))
    if chosen and rows and all(r.change == NOT_APPLICABLE for r in rows):
        names = ", ".join(m.name for m in chosen)
        raise LeakbenchError(f"diff: --metric {names} has no value in any row of A or B "
                             f"(their rows are {', '.join(sorted({x[1] for x in rows_a.values()}))}"
                             f"; default: each row's leaderboard metric)")
    if rows_a and rows_b and not rows_a.keys() & rows_b.keys():  # every row new or missing:
        # "no regressions" had passed a comparison against the wrong folder
        suites = [", ".join(sorted({r["suite"] for r in rec})) for rec in (rec_a, rec_b)]
        raise LeakbenchError(f"diff: A ({suites[0]}) and B ({suites[1]}) have no row in "
                             "common: nothing to compare (diff compares two runs of one "
                             "suite's matrix)")
    out = Diff(Path(a), Path(b), list(used) or [headline().name], rows=rows,
               suites_a=sorted({r["suite"] for r in rec_a}),
               suites_b=sorted({r["suite"] for r in rec_b}))
    out.cells = _cells(rec_a, rec_b, [m.name for m in chosen] if chosen else None, labels)
    util_a, util_b = _utility_rows(rec_a), _utility_rows(rec_b)  # a utility regression had
    for key in sorted(util_a.keys() | util_b.keys(), key=str):  # been a listed cell, exit 0
        ia, ib = util_a.get(key), util_b.get(key)
        change = NEW if ia is None else MISSING if ib is None else judge(ia, ib, True)
        out.utility.append(RowChange(key, UTILITY_METRIC, change, ia, ib))
    out.common = len(rec_a) if common else None
    return out
