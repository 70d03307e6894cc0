"""``leakbench table``: one metric pivoted over two axes of the records, for a paper.

:func:`pivot` builds the table as data (one row per rows × cols entry: mean, 95% interval,
n, best and tie flags); :func:`render_pivot` writes it as LaTeX (booktabs), markdown or CSV.

Every number agrees with the leaderboard: a cell's seeds are its records that ran (skipped
ones are no seeds), a diverged, failed or timed-out seed enters at its floor, pooled over its
scenario as the leaderboard pools it (:func:`~bench.leaderboard.uncertainty.seed_values`),
a pooled axis's cells on one private batch enter at their mean (one seed), and the interval
is the same two-sided 95% one (:func:`~bench.leaderboard.uncertainty.metric_interval`:
Student's t, Wilson's for a share such as label accuracy). The best entry of each row (or column) is
bold; an entry that could also rank first — no entry of its row has an interval wholly on the
better side of its own, its shared leaderboard rank includes 1 — is marked with a dagger.
Same records, same options: byte-identical output (stable order, fixed decimals, no clock).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bench.latex import BREAKS, shrink_to_line, tex
from bench.leaderboard.aggregate import is_reference
from bench.leaderboard.frames import records_frame, scenarios
from bench.leaderboard.notes import unattacked_note
from bench.leaderboard.text_tables import records_metric
from bench.leaderboard.uncertainty import (
    LEVEL,
    MISSING,
    Interval,
    interval_text,
    metric_interval,
    never_attacked_count,
    per_private_batch,
    seed_values,
    shared_ranks,
)
from bench.leaderboard.where import AXES, NAMED, WHERE, parse_where
from bench.markdown import pipe_table
from bench.metrics import Metric, list_metrics
from bench.outputs import write_output
from bench.paths import store_problem
from bench.registry import LeakbenchError, short, suggest
from bench.store import load_records

FORMATS = ("latex", "markdown", "csv")
BEST = ("row", "col", "none")
DAGGER = "†"


@dataclass
class Pivot:
    """A pivot table as data: ``cells`` has one row per (row value, column value) with seeds,
    columns ``row``, ``col``, ``mean``, ``low``, ``high``, ``half``, ``n``, ``best``, ``tied``."""

    metric: type[Metric]
    rows: str
    cols: str
    row_values: list[str]
    col_values: list[str]
    cells: pd.DataFrame
    where: dict[str, list[str]] = field(default_factory=dict)
    best: str = "row"
    pooled: dict[str, list[str]] = field(default_factory=dict)  # axes varying inside cells
    uneven: dict[str, str] = field(default_factory=dict)  # pooled axes whose cells differ
    missing: tuple[int, int] = (0, 0)  # seeds left out: (no floor for the metric, unattacked)
    references: list[str] = field(default_factory=list)  # never bold, or left out if pooled

    def seed_counts(self) -> list[int]:
        """The distinct n of the entries, ascending (an n/a entry has no seeds to count)."""
        return sorted({int(n) for n in self.cells["n"] if n})

    def cell(self, row: str, col: str) -> dict[str, Any] | None:
        hit = self.cells[(self.cells["row"] == row) & (self.cells["col"] == col)]
        return None if hit.empty else hit.iloc[0].to_dict()


def table_metrics() -> list[type[Metric]]:
    """The metrics a table can show: the per-item ones (a value per cell)."""
    return list_metrics(kind="per_item")


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v)


def _order(axis: str, values: set[str]) -> list[str]:
    """Axis values in a stable order: ``none`` first for defenses, numbers by value."""
    def key(v: str) -> tuple:
        first = 0 if axis == "defense" and v == "none" else 1
        return (first, 0, float(v), v) if re.fullmatch(r"-?\d+(\.\d+)?", v) else (first, 1, 0, v)

    return sorted(values, key=key)


def pivot(records: list[dict[str, Any]], rows: str = "defense", cols: str = "attack",
          value: str | None = None, where: dict[str, list[str]] | None = None,
          best: str = "row") -> Pivot:
    """``value``'s mean and 95% interval per (``rows`` value, ``cols`` value) over the attack
    records matching ``where`` (default: the records' leaderboard metric, PSNR or ROUGE-1);
    the best entry per row (``best="row"``), per column or none flagged, and the entries
    whose shared rank includes 1 flagged as tied."""
    chosen = _metric(value) if value is not None else None  # '': unknown, not the default
    for flag, axis in (("--rows", rows), ("--cols", cols)):
        if axis not in AXES:
            raise LeakbenchError(f"{flag}: unknown axis {axis!r}{suggest(axis, AXES)}; "
                                 f"expected one of {', '.join(AXES)}")
    if rows == cols:
        raise LeakbenchError(f"--rows and --cols are both {rows!r}: pick two axes")
    if best not in BEST:
        raise LeakbenchError(f"--best: expected one of {', '.join(BEST)}, got {best!r}")
    df = records_frame(records)
    if df.empty:
        raise LeakbenchError("no attack records to build a table from")
    metric = records_metric(df, chosen, "--value")
    # every seed's value as the leaderboard takes it: floors pooled over the whole scenario,
    # before any filter, so a filter never changes which floor a failed seed gets
    parts = [seed_values(g, metric.name, metric.higher_is_better,
                         no_floor_value=metric.no_floor_value) for _, g in scenarios(df)]
    values = pd.concat(parts) if parts else pd.DataFrame({"value": [], "source": []})
    df = df.loc[values.index].assign(_value=values["value"], _source=values["source"])
    if df.empty:  # seed_values leaves skipped cells out: "--where : no record matches them all"
        raise LeakbenchError(f"no attack cell ran: all {len(records)} record(s) are skipped or "
                             "of another kind")
    for axis in WHERE:
        df[axis] = df[axis].map(_text)
    where = where or {}
    df = _filter(df, where)
    reference = df["attack_name"].map({n: is_reference(n) for n in set(df["attack_name"])}
                                      ).astype(bool)
    references = sorted(set(df.loc[reference, "attack"]))  # never bold, or left out:
    if "attack" not in (rows, cols):  # pooled with the attacks, a guess enters their means
        references = [] if reference.all() else references
        df = df[~reference] if references else df
    if df["_value"].isna().all():  # else a grid of n/a captioned "n = 0 seeds per cell"
        hint = " (it needs a local weights file)" if metric.needs_weights else ""
        raise LeakbenchError(f"--value {metric.name}: n/a on every one of the {len(df)} "
                             f"seed(s) the table would show{hint}")
    groups = {(r, c): g for (r, c), g in df.groupby([rows, cols], sort=False)}
    # a seed is a private batch: cells a pooled axis puts on one enter at their mean
    intervals = {k: metric_interval(per_private_batch(g["_value"], g["scenario_seed"]),
                                    metric.share)
                 for k, g in groups.items()}
    row_values, col_values = _order(rows, set(df[rows])), _order(cols, set(df[cols]))
    flags = _flags({k: iv for k, iv in intervals.items()  # a guess is no attack to beat
                    if k[0 if rows == "attack" else 1] not in references} if references
                   else intervals, row_values, col_values, best, metric.higher_is_better,
                   metric.digits)
    cells = pd.DataFrame(
        [{"row": r, "col": c, "mean": iv.mean, "low": iv.low, "high": iv.high,
          "half": iv.half if iv.centred else None,  # a Wilson interval: its ends, no ±
          "n": iv.n, "best": flags.get((r, c), (False, False))[0],
          "tied": flags.get((r, c), (False, False))[1],
          "centred": iv.centred}
         for r in row_values for c in col_values if (iv := intervals.get((r, c)))],
        columns=["row", "col", "mean", "low", "high", "half", "n", "best", "tied", "centred"])
    pooled = {a: _order(a, set(df[a])) for a in AXES
              if a not in (rows, cols) and df.groupby([rows, cols])[a].nunique().max() > 1}
    left = [g[g["_source"] == MISSING] for g in groups.values() if g["_value"].notna().any()]
    unattacked = sum(map(never_attacked_count, left))
    missing = (sum(map(len, left)) - unattacked, unattacked)  # an n/a entry left none out
    uneven = {a: text for a in pooled if (text := _uneven(a, groups))}
    return Pivot(metric, rows, cols, row_values, col_values, cells, where, best, pooled, uneven,
                 missing, references)


def _uneven(axis: str, groups: dict[tuple[str, str], pd.DataFrame]) -> str:
    """Which values of a pooled ``axis`` each entry pools, where entries pool different ones
    (an undefended row over batch sizes 1, 2 and 4 beside defenses run at batch 1 alone reads
    16 dB below its batch-1 value); empty where all pool the same."""
    by_set: dict[tuple[str, ...], list[str]] = {}
    for (r, c), g in groups.items():
        by_set.setdefault(tuple(_order(axis, set(g[axis]))), []).append(f"{r}/{c}")
    if len(by_set) < 2:
        return ""
    ordered = sorted(by_set.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    parts = [f"{', '.join(values)} in {', '.join(entries[:6])}"
             + (f" and {len(entries) - 6} more" if len(entries) > 6 else "")
             for values, entries in ordered[1:]]
    return (f"{axis} " + "; ".join(parts)
            + f"; {', '.join(ordered[0][0])} in the other {len(ordered[0][1])} entries")


def _metric(name: str) -> type[Metric]:
    known = {m.name: m for m in table_metrics()}
    if name in known:
        return known[name]
    pooled = [m.name for m in list_metrics(kind="pooled")]
    why = (f"{name!r} is pooled over groups of cells, not a value per cell" if name in pooled
           else f"unknown metric {name!r}{suggest(name, known)}")
    raise LeakbenchError(f"--value: {why}; expected one of {', '.join(known)}")


def _filter(df: pd.DataFrame, where: dict[str, list[str]]) -> pd.DataFrame:
    keep = pd.Series(True, index=df.index)
    for key, wanted in where.items():
        names = df[f"{key}_name"].map(_text) if key in NAMED else df[key]
        for v in wanted:
            if not ((df[key] == v) | (names == v)).any():
                seen = _order(key, set(df[key]) | (set(names) if key in NAMED else set()))
                raise LeakbenchError(f"--where: no record has {key}={v!r}{suggest(v, seen)}; "
                                     f"{key} values: {', '.join(seen) or 'none'}")
        keep &= df[key].isin(wanted) | names.isin(wanted)
    if not keep.any():
        shown = ", ".join(f"{k}={'|'.join(v)}" for k, v in where.items())
        raise LeakbenchError(f"--where {shown}: each condition matches records, but no record "
                             "matches them all")
    return df[keep]


def _flags(intervals: dict[tuple[str, str], Interval], row_values: list[str],
           col_values: list[str], best: str, higher: bool, digits: int
           ) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(best, tied) per entry: best = the best mean of its line (row or column) as printed
    (to ``digits`` decimals: two entries that read the same are both best) where the line
    has two or more scored entries; tied = not best, but no entry of the line lies wholly
    on the better side of it (shared rank includes 1)."""
    flags = {k: (False, False) for k in intervals}
    if best == "none":
        return flags
    lines = ([[(r, c) for c in col_values] for r in row_values] if best == "row"
             else [[(r, c) for r in row_values] for c in col_values])
    for line in lines:
        keys = [k for k in line if k in intervals and intervals[k].mean is not None]
        if len(keys) < 2:
            continue
        means = [round(intervals[k].mean, digits) for k in keys]  # type: ignore[arg-type]
        top = max(means) if higher else min(means)
        ranks = shared_ranks([intervals[k] for k in keys], higher)
        for k, m, (first, _) in zip(keys, means, ranks):
            flags[k] = (m == top, m != top and first == 1)
    return flags


# --- rendering -------------------------------------------------------------------------------

def cell_text(cell: dict[str, Any] | None, digits: int) -> str:
    """``12.70 ± 6.39``; ``± n/a`` for one seed; ``n/a`` without a value; ``–`` no seeds."""
    if cell is None:
        return "–"
    if cell["mean"] is None or pd.isna(cell["mean"]):
        return "n/a"
    return interval_text(*(None if pd.isna(cell[k]) else float(cell[k])
                           for k in ("mean", "low", "high")), digits, bool(cell["centred"]))


def default_caption(p: Pivot) -> str:
    m = p.metric
    direction = "higher" if m.higher_is_better else "lower"
    ns = p.seed_counts()
    n = "n/a" if not ns else str(ns[0]) if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    counts = ("at its floor" if m.no_floor_value is None
              else f"as {m.no_floor_value:g} (the metric has no floor)")
    shown = " (shown where it varies)" if len(ns) > 1 else ""
    spread = (f"and its two-sided {LEVEL:.0%} Wilson interval (a share; n/a for one seed)"
              if m.share else f"± the half-width of the two-sided {LEVEL:.0%} Student-t "
              "interval (n/a for one seed)")
    text = (f"{m.header()}, rows: {p.rows}, columns: {p.cols}. Each cell: mean over its seeds "
            f"{spread}; n = {n} {'seed' if n == '1' else 'seeds'} per cell{shown}; a diverged, "
            f"failed or timed-out seed counts {counts}.") + unattacked_note(p.missing[1])
    if p.missing[0]:
        text += (f" {p.missing[0]} diverged or failed seed(s) have no floor for {m.name}: "
                 "left out of the means and n.")
    if p.where:
        text += " Records with " + ", ".join(f"{k}={'|'.join(v)}" for k, v in p.where.items()) \
            + "."
    if p.pooled:
        text += " Pooled over " + "; ".join(f"{a}: {', '.join(v)}"
                                            for a, v in p.pooled.items()) + \
            " (a seed is a private batch: its pooled cells enter at their mean)."
    if p.uneven:
        text += (" Entries pool different values, so they compare different settings: "
                 + "; ".join(p.uneven.values()) + ".")
    if p.best != "none":
        line = {"row": "row", "col": "column"}[p.best]
        text += (f" Bold: the best mean of its {line} ({direction} is better; a {line} of "
                 "two entries or more); "
                 f"{DAGGER}: tied with it (no entry of the {line} has an interval wholly "
                 "better than its own).")
        if p.references and "attack" in (p.rows, p.cols):
            text += (f" Never bold or {DAGGER}: {', '.join(p.references)}, a reference that "
                     "reads no update.")
    if p.references and "attack" not in (p.rows, p.cols):
        text += (f" Left out: {', '.join(p.references)}, a reference that reads no update "
                 "(pooled with the attacks it would enter their means).")
    return text


def default_label(p: Pivot) -> str:
    return "tab:" + re.sub(r"[^a-z0-9]+", "-", f"{p.metric.name}-{p.rows}-{p.cols}".lower())


LABEL = re.compile(r"[A-Za-z0-9:._-]+")  # \label{...} and a pandoc {#...} identifier take these


def render_pivot(p: Pivot, fmt: str = "latex", caption: str | None = None,
                 label: str | None = None) -> str:
    """The table as LaTeX (booktabs; a ``table`` float with caption and label), markdown
    (a pipe table, then a pandoc ``Table:`` caption with its ``{#label}``) or CSV (one line
    per entry with seeds, numbers unrounded; no caption)."""
    if caption is not None and not caption.strip() and fmt != "csv":  # "Table 1: " alone
        raise LeakbenchError("--caption: empty (leave it out for the default caption)")
    caption = default_caption(p) if caption is None else caption
    label = default_label(p) if label is None else label
    if label and not LABEL.fullmatch(label):
        raise LeakbenchError(f"--label: {short(label)} is no LaTeX label or markdown anchor "
                             "(letters, digits and : . _ - only)")
    if fmt == "latex":
        return _latex(p, caption, label)
    if fmt == "markdown":
        return _markdown(p, caption, label)
    if fmt == "csv":
        return _csv(p)
    raise LeakbenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")


def _grid(p: Pivot, mark: Any) -> list[list[str]]:
    out = []
    varies = len(p.seed_counts()) > 1
    for r in p.row_values:
        line = [r]
        for c in p.col_values:
            cell = p.cell(r, c)
            text = cell_text(cell, p.metric.digits)
            if varies and cell is not None and cell["n"]:
                text += f" (n={int(cell['n'])})"
            line.append(mark(text, cell) if cell is not None else text)
        out.append(line)
    return out


def _markdown(p: Pivot, caption: str, label: str) -> str:
    def mark(text: str, cell: dict[str, Any]) -> str:
        return f"**{text}**" if cell["best"] else f"{text} {DAGGER}" if cell["tied"] else text

    body = pipe_table(_grid(p, mark), [p.rows, *p.col_values])
    suffix = f" {{#{label}}}" if label else ""
    caption = " ".join(caption.split())  # pandoc's caption is one paragraph: a blank line
    return f"{body}\n\nTable: {caption}{suffix}\n"  # had ended it


def _latex(p: Pivot, caption: str, label: str) -> str:
    def mark(text: str, cell: dict[str, Any]) -> str:
        t = tex(text)
        return f"\\textbf{{{t}}}" if cell["best"] else f"{t}$^\\dagger$" if cell["tied"] else t

    grid = _grid(p, mark)
    header = " & ".join(tex(h) for h in [p.rows, *p.col_values])
    lines = ["% Generated by `leakbench table`; needs booktabs and graphicx.",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{tex(caption, BREAKS)}}}"]
    if label:
        lines.append(f"\\label{{{label}}}")
    tabular = [f"\\begin{{tabular}}{{l{'r' * len(p.col_values)}}}", "\\toprule",
               f"{header} \\\\", "\\midrule"]
    tabular += [" & ".join([tex(line[0]), *line[1:]]) + " \\\\" for line in grid]
    tabular += ["\\bottomrule", "\\end{tabular}"]
    lines += [shrink_to_line("\n".join(tabular)), "\\end{table}"]
    return "\n".join(lines) + "\n"


def _csv(p: Pivot) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([p.rows, p.cols, "metric", "mean", "half_width", "ci_low", "ci_high", "n",
                "best", "tied"])
    for c in p.cells.to_dict("records"):
        w.writerow([c["row"], c["col"], p.metric.name, *(_raw(c[k]) for k in
                    ("mean", "half", "low", "high")), int(c["n"]), int(c["best"]),
                    int(c["tied"])])
    return buf.getvalue()


def _raw(v: float | None) -> str:
    return "" if v is None or pd.isna(v) else repr(float(v))


def write_table(out_dir: Path, rows: str = "defense", cols: str = "attack",
                value: str | None = None, where: list[str] | None = None, best: str = "row",
                fmt: str = "latex", caption: str | None = None, label: str | None = None,
                output: Path | None = None) -> tuple[str, Pivot]:
    """Render the pivot of the records under ``out_dir``; written atomically to ``output``
    where given. Returns the text and the pivot (its ``pooled`` axes are worth a warning)."""
    if fmt not in FORMATS:
        raise LeakbenchError(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    conditions = parse_where(where)
    records = load_records(Path(out_dir), quarantine=False)  # only read: nothing moves
    if not records:
        raise LeakbenchError(store_problem(Path(out_dir))
                             or f"no records under {Path(out_dir) / 'records'}")
    p = pivot(records, rows, cols, value, conditions, best)
    text = render_pivot(p, fmt, caption, label)
    if output is not None:
        write_output(Path(output), text)
    return text, p
