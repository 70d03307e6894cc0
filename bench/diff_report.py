"""``leakbench diff``'s report of a :class:`bench.diff.Diff`: markdown (summary counts, then
one table per kind of change) or CSV (every compared row and every cell change)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.diff import (
    FORMATS,
    MISSING,
    NEW,
    NOT_APPLICABLE,
    ROW,
    STATUS,
    UTILITY_ROW,
    VALUE,
    CellChange,
    Diff,
    RowChange,
)
from bench.diff_verdicts import IMPROVEMENT, REGRESSION, UNCHANGED, UNJUDGED
from bench.leaderboard.export import exact_csv
from bench.leaderboard.frames import SCENARIO, scenario_title
from bench.leaderboard.uncertainty import Interval
from bench.markdown import pipe_table
from bench.metrics import METRICS, fixed, get_metric
from bench.metrics.base import signed
from bench.registry import LeakbenchError


def _fmt_iv(iv: Interval | None, digits: int) -> str:
    if iv is None:
        return "—"
    return f"{iv.format(digits)} (n={iv.n})"


def _row_table(rows: list[RowChange]) -> str:
    table = []
    for r in rows:
        digits = get_metric(r.metric).digits
        delta = "—" if r.delta is None else signed(r.delta, digits)
        table.append({"Scenario": scenario_title(r.key[:len(SCENARIO)]),
                      "Defense": r.key[-2], "Attack": r.key[-1], "Metric": r.metric,
                      "A": _fmt_iv(r.a, digits), "B": _fmt_iv(r.b, digits), "Δ mean": delta})
    return pipe_table(table)


def _cell_table(cells: list[CellChange]) -> str:
    table = [{"Cell": c.cell_id, "Row": c.label, "A": c.a_status or "—",
              "B": c.b_status or "—"} for c in cells]
    return pipe_table(table)


SHOWN_VALUE_CHANGES = 30


def _value_table(cells: list[CellChange]) -> str:
    """The cells whose value changed with their status the same: per metric, a value that
    appeared or went first, then the largest changes; at most :data:`SHOWN_VALUE_CHANGES`
    of each metric (the count had named no cell, and a nightly run off in one cell could not
    tell which). A change too small for the metric's decimals shows its Δ as ``+1.2e-12``."""
    def size(c: CellChange) -> float:
        if c.a_value is None or c.b_value is None:
            return math.inf
        return abs(c.b_value - c.a_value)

    by_metric: dict[str | None, list[CellChange]] = {}
    for c in cells:
        by_metric.setdefault(c.metric, []).append(c)
    table, left = [], []
    for metric, changed in by_metric.items():
        ranked = sorted(changed, key=lambda c: (-size(c), c.cell_id))
        digits = get_metric(metric).digits if metric in METRICS else 3  # a utility cell's
        # accuracy or update cosine: no registered metric
        for c in ranked[:SHOWN_VALUE_CHANGES]:
            a, b = ("n/a" if v is None else fixed(v, digits) for v in (c.a_value, c.b_value))
            delta = "—"
            if not math.isinf(size(c)):
                change = c.b_value - c.a_value  # type: ignore[operator]
                delta = signed(change, digits)
                if not delta.strip("+-0."):  # it had read "+0.00": A and B alike
                    delta = f"{change:+.1e}"
            table.append({"Cell": c.cell_id, "Row": c.label, "Metric": metric, "A": a,
                          "B": b, "Δ": delta})
        if len(ranked) > SHOWN_VALUE_CHANGES:
            left.append(f"{len(ranked) - SHOWN_VALUE_CHANGES} more of {metric}")
    note = f"\n\n… and {', '.join(left)} (`--format csv` lists every one)" if left else ""
    return pipe_table(table) + note


def _utility_table(rows: list[RowChange]) -> str:
    """Utility rows: a defense's test accuracy per dataset, architecture and setting."""
    table = [{"Dataset": r.key[0], "Arch": r.key[1], "Setting": r.key[2] or "—",
              "Defense": r.key[3], "A": _fmt_iv(r.a, 3), "B": _fmt_iv(r.b, 3),
              "Δ mean": "—" if r.delta is None else signed(r.delta, 3)} for r in rows]
    return pipe_table(table)


def _means_differ(r: RowChange) -> bool:
    """Whether a row's means differ as shown (a 1e-9 change printed as "+0.00" had been
    listed as differing, with the same text on both sides)."""
    digits = get_metric(r.metric).digits
    a, b = (None if iv is None or iv.mean is None else fixed(iv.mean, digits)
            for iv in (r.a, r.b))
    return a != b


def _once(rows: list[RowChange]) -> list[RowChange]:
    """A new or missing row once, with the first metric (the CSV has every metric)."""
    seen: dict[tuple, RowChange] = {}
    for r in rows:
        seen.setdefault(r.key, r)
    return list(seen.values())


def render_markdown(d: Diff) -> str:
    """The report: summary counts, then one table per kind of change (empty kinds left out)."""
    unjudged = [r for r in d.row_changes(UNJUDGED) if _means_differ(r)]
    new_rows, missing_rows = _once(d.row_changes(NEW)), _once(d.row_changes(MISSING))
    lines = [f"# leakbench diff: {d.a} → {d.b}", "",
             f"Metrics: {', '.join(d.metrics)}. A row (scenario, defense, attack) changed where "
             "the 95% intervals of its mean over seeds do not overlap; rows in both folders "
             "are counted once per metric. Each row is tested alone, with no correction for "
             "their number: where nothing changed, the intervals miss each other by chance "
             "for about 1 row in 200, half of them false regressions (normal seeds of equal "
             "spread, 2–30 seeds each): a lone flag among hundreds wants a re-run.", ""]
    counts = [(REGRESSION + "s", len(d.row_changes(REGRESSION))),
              (IMPROVEMENT + "s", len(d.row_changes(IMPROVEMENT))),
              ("unchanged", len(d.row_changes(UNCHANGED))),
              ("not judged (a side has n < 2)", len(d.row_changes(UNJUDGED))),
              ("metric n/a on both sides", len(d.row_changes(NOT_APPLICABLE))),
              ("new rows", len(new_rows)), ("missing rows", len(missing_rows)),
              ("cells with a changed status", len(d.cell_changes(STATUS))),
              ("cells that finished in A and failed in B (error, timeout)",
               len(d.stopped_finishing())),
              ("new cells", len(d.cell_changes(NEW))),
              ("missing cells", len(d.cell_changes(MISSING))),
              ("cells with a changed value, same status",
               len({c.cell_id for c in d.cell_changes(VALUE)}))]
    lines += [f"- {name}: {n}" for name, n in counts]
    if d.utility:  # a defense's accuracy after the utility track's training, judged alike
        lines.append("- utility rows (test accuracy; higher is better): " + ", ".join(
            f"{len(d.utility_changes(c))} {name}" for c, name in (
                (REGRESSION, "regressions"), (IMPROVEMENT, "improvements"),
                (UNCHANGED, "unchanged"), (UNJUDGED, "not judged"), (NEW, "new"),
                (MISSING, "missing"))))
    if d.common is not None:
        lines.append(f"- compared on the {d.common} cells found in both folders (--common); "
                     "the others left out")
    only_a = sorted(set(d.suites_a) - set(d.suites_b))
    only_b = sorted(set(d.suites_b) - set(d.suites_a))
    if only_a or only_b:
        lines.append(f"- suites only in A: {', '.join(only_a) or 'none'}; only in B: "
                     f"{', '.join(only_b) or 'none'}")
    sections = [("Regressions", _row_table, d.row_changes(REGRESSION)),
                ("Improvements", _row_table, d.row_changes(IMPROVEMENT)),
                ("Utility regressions (test accuracy)", _utility_table,
                 d.utility_changes(REGRESSION)),
                ("Utility improvements (test accuracy)", _utility_table,
                 d.utility_changes(IMPROVEMENT)),
                ("Not judged, means differ (a side has n < 2)", _row_table, unjudged),
                ("Status changes", _cell_table, d.cell_changes(STATUS)),
                (f"New rows (only in B; {d.metrics[0]})", _row_table, new_rows),
                (f"Missing rows (only in A; {d.metrics[0]})", _row_table, missing_rows),
                ("New cells (only in B)", _cell_table, d.cell_changes(NEW)),
                ("Missing cells (only in A)", _cell_table, d.cell_changes(MISSING)),
                ("Changed values, same status (per metric, largest first)", _value_table,
                 d.cell_changes(VALUE))]
    for title, render, items in sections:
        if items:
            lines += ["", f"## {title}", "", render(items)]  # type: ignore[operator]
    verdict = "no regressions"
    if d.row_changes(REGRESSION) or d.utility_changes(REGRESSION):
        verdict = "regressions found"
    elif d.regressed:  # only cells that stopped finishing
        verdict = (f"regressions found: {len(d.stopped_finishing())} cell(s) that finished in "
                   "A failed in B, though no row's mean regressed")
    lines += ["", f"Result: {verdict}."]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["kind", "change", "metric", *SCENARIO, "defense", "attack", "a_mean", "a_ci_low",
               "a_ci_high", "a_n", "b_mean", "b_ci_low", "b_ci_high", "b_n", "delta", "cell_id",
               "row", "a_status", "b_status", "a_value", "b_value", "setting"]


def render_csv(d: Diff) -> str:
    """Every compared row (``kind`` row, unchanged ones too), then every cell change (``kind``
    cell: new, missing, status changed, value changed), one line each."""
    rows: list[dict[str, Any]] = []
    for kind, key, changes in (("row", ROW, d.rows),  # a defense's utility accuracy:
                               ("utility row", UTILITY_ROW, d.utility)):  # dataset, arch,
        for r in changes:  # setting, defense
            row: dict[str, Any] = {"kind": kind, "change": r.change, "metric": r.metric,
                                   **dict(zip(key, r.key)), "delta": r.delta}
            for side, iv in (("a", r.a), ("b", r.b)):
                if iv is not None:
                    row.update({f"{side}_mean": iv.mean, f"{side}_ci_low": iv.low,
                                f"{side}_ci_high": iv.high, f"{side}_n": iv.n})
            rows.append(row)
    for c in d.cells:
        rows.append({"kind": "cell", "change": c.change, "metric": c.metric,
                     **dict(zip(ROW, c.key or ())), "cell_id": c.cell_id, "row": c.label,
                     "a_status": c.a_status, "b_status": c.b_status,
                     "a_value": c.a_value, "b_value": c.b_value})
    frame = pd.DataFrame(rows, columns=CSV_COLUMNS).astype({"a_n": "Int64", "b_n": "Int64"})
    return exact_csv(frame)


def render(d: Diff, fmt: str = "markdown") -> str:
    """The report in ``fmt`` (markdown or csv)."""
    if fmt not in FORMATS:
        raise LeakbenchError(f"unknown diff format {fmt!r} (expected markdown or csv)")
    return render_markdown(d) if fmt == "markdown" else render_csv(d)
