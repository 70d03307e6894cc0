"""What ``leakbench run --dry-run`` prints: every cell with its status for a small matrix (or
with ``--verbose``), else a summary by axis; for a grid above the cell limit, the axes alone
(nothing is expanded)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from bench.cli_support import frozen_gc
from bench.identity import chain_label
from bench.registry import LeakbenchError, warn
from bench.suite import Suite, count_cells
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


def _axis_key(axis: str, value: Any) -> Any:
    """A suite's axis value as a cell carries it (a client's settings as sorted pairs)."""
    return tuple(sorted(value.items())) if axis == "mode" else value


def _cell_value(axis: str, cell: Any) -> Any:
    """The cell's value on ``axis``; None where its kind has no such axis (a utility cell has
    no attack, batch size, client or victim)."""
    return getattr(cell, "client" if axis == "mode" else axis, None)


def print_plan(suite: Suite, rows: Iterable[tuple[Any, str]], verbose: bool, expected: int,
               out: TextIO) -> Counter:
    """List or summarise the planned cells; the status counts. The summary counts every
    cell under each axis it has, and says how many cells are of each kind."""
    listing = verbose or expected <= LIST_LIMIT
    index = {axis: {_axis_key(axis, v): i for i, v in enumerate(values)}
             for axis, values in axis_values(suite).items()
             if len(values) <= AXIS_VALUES_SHOWN}
    counts: dict[str, Counter] = {axis: Counter() for axis in index}
    kinds: Counter = Counter()
    status_counts: Counter = Counter()
    for cell, status in rows:
        status_counts[status.split(":")[0]] += 1
        if listing:
            print(f"{cell.cell_id}  {status:<8.8s}  {cell.describe()}"
                  + (f"  ({status})" if status.startswith("skip") else ""), file=out)
            continue
        kinds[cell.kind] += 1
        for axis, positions in index.items():
            value = _cell_value(axis, cell)
            if value is not None and value in positions:
                counts[axis][positions[value]] += 1
    if not listing:
        print(f"{suite.name}: summary by axis (cells per value; --verbose lists every cell)",
              file=out)
        if len(kinds) > 1:
            print("  kind       " + " · ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
                  file=out)
        for line in axes_lines(suite, counts):
            print(line, file=out)
    return status_counts


def dry_run(suite: Suite, out: Path, force: bool, retry_failed: bool, verbose: bool,
            limit: int) -> int:
    """List (or summarise by axis) the cells and their status; write nothing (a damaged
    record is named and left in place, not quarantined: no lock is held). Refuses the ``out``
    a run would refuse."""
    from bench.outputs import out_folder_problem
    from bench.preflight import preflight_perceptual, scored_with_lpips
    from bench.resume import iter_plan

    problem = out_folder_problem(out)
    if problem:
        raise LeakbenchError(problem)

    n = count_cells(suite)
    if n > limit:
        print(f"{suite.name}: {n} cells before exclude; axes:")
        for line in axes_lines(suite):
            print(line)
        warn(f"{suite.name}: {n} cells, above the limit of {limit}: a run is refused unless "
             f"--max-cells {n} allows it (nothing was expanded)")
        return 0
    scores_images = False  # an image attack cell to run: the run's LPIPS preflight applies

    def watched(rows: Iterable[tuple[Any, str]]) -> Iterable[tuple[Any, str]]:
        nonlocal scores_images
        for cell, status in rows:
            scores_images = scores_images or (status == "to run" and scored_with_lpips(cell))
            yield cell, status

    with frozen_gc():
        folder = iter_plan(suite, out, force, retry_failed, quarantine=False)
        counts = print_plan(suite, watched(folder), verbose, n, sys.stdout)
    if scores_images:  # the run refused a missing or foreign LPIPS file; its dry run had not
        preflight_perceptual(suite.perceptual)
    folder.warn_mismatch()
    statuses = ", ".join(f"{k} {s}" for s, k in sorted(counts.items()))
    print(f"{suite.name}: {sum(counts.values())} cells" + (f" — {statuses}" if counts else ""))
    if not counts:
        warn_no_cells(suite)
    return 0


def warn_no_cells(suite: Suite) -> None:
    """A matrix its exclude rules empty (the only way a suite has no cell) runs nothing: say
    so, where a summary alone read like a finished run."""
    warn(f"{suite.source or suite.name}: the exclude rules leave none of the matrix's "
         f"{count_cells(suite)} cells: nothing runs")
