"""What ``leakbench run --dry-run`` prints: every cell with its status for a small matrix (or
with ``--verbose``), else a summary by axis; for a grid above the cell limit, the axes alone
(nothing is expanded)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, TextIO

from bench.identity import chain_label
from bench.suite import Suite
from bench.suite.expand import axis_values

LIST_LIMIT = 200
"""A dry run lists every cell up to this many, and summarises by axis above it."""
AXIS_VALUES_SHOWN = 12


def _label(axis: str, value: Any) -> str:
    if axis in ("attack", "arch", "dataset"):
        return value.label
    if axis == "defense":
        return chain_label(value)
    if axis == "mode":
        return ",".join(f"{k}={v}" for k, v in sorted(value.items()))
    return str(value)


def axes_lines(suite: Suite, counts: dict[str, Counter] | None = None) -> list[str]:
    """One line per axis: its values (with their cell counts where counted)."""
    lines = []
    for axis, values in axis_values(suite).items():
        name = "client" if axis == "mode" else axis
        if len(values) > AXIS_VALUES_SHOWN:
            lines.append(f"  {name:<10} {len(values)} values")
            continue
        shown = []
        for i, v in enumerate(values):
            label = _label(axis, v)
            n = counts[axis][i] if counts is not None and axis in counts else None
            shown.append(label if n is None else f"{label} {n}")
        lines.append(f"  {name:<10} " + " · ".join(shown))
    if suite.utility:
        lines.append("  utility    " + ",".join(f"{k}={v}" for k, v in
                                                  sorted(suite.utility.items())))
    return lines


def print_plan(suite: Suite, rows: Iterable[tuple[Any, str]], verbose: bool, expected: int,
               out: TextIO) -> Counter:
    """List or summarise the planned cells; the status counts."""
    listing = verbose or expected <= LIST_LIMIT
    small = {axis: {id(v): i for i, v in enumerate(values)}
             for axis, values in axis_values(suite).items()
             if axis in ("dataset", "arch", "defense", "attack") and
             len(values) <= AXIS_VALUES_SHOWN}
    counts: dict[str, Counter] = {axis: Counter() for axis in axis_values(suite)}
    plain = {axis: {v: i for i, v in enumerate(values)}
             for axis, values in axis_values(suite).items()
             if axis in ("batch_size", "victim") and len(values) <= AXIS_VALUES_SHOWN}
    status_counts: Counter = Counter()
    for cell, status in rows:
        status_counts[status.split(":")[0]] += 1
        if listing:
            print(f"{cell.cell_id}  {status:<8.8s}  {cell.describe()}"
                  + (f"  ({status})" if status.startswith("skip") else ""), file=out)
            continue
        for axis, index in small.items():
            key = id(getattr(cell, axis, None))
            if key in index:
                counts[axis][index[key]] += 1
        for axis, index in plain.items():
            value = getattr(cell, axis, None)
            if value in index:
                counts[axis][index[value]] += 1
    if not listing:
        print(f"{suite.name}: summary by axis (cells per value; --verbose lists every cell)",
              file=out)
        counted = {a: counts[a] for a in (*small, *plain)}
        for line in axes_lines(suite, counted):
            print(line, file=out)
    return status_counts
