"""``leakbench export``: one flat CSV row per cell, in a fixed column and row order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.leaderboard.frames import records_frame
from bench.registry import LeakbenchError
from bench.store import load_records, write_atomic

# Frame columns that serve the tables only (a picture path, the threshold, a plot axis).
INTERNAL_COLUMNS = ("picture", "success_psnr", "strength")


def export_columns(df: pd.DataFrame) -> list[str]:
    """The CSV's columns: the record frame's, in its order (identity, the registered metrics,
    cost, provenance), less the table-only ones. A new metric is a new column, with no list
    to edit."""
    return [c for c in df.columns if c not in INTERNAL_COLUMNS]


def export(out_dir: Path, fmt: str = "csv", output: Path | None = None) -> Path:
    """One flat row per cell, in a stable column and row order."""
    if fmt != "csv":
        raise LeakbenchError(f"unknown export format {fmt!r} (expected csv)")
    df = records_frame(load_records(Path(out_dir)))
    if df.empty:
        raise LeakbenchError(f"no records under {Path(out_dir) / 'records'}")
    path = Path(output) if output else Path(out_dir) / "cells.csv"
    write_atomic(path, df[export_columns(df)].to_csv(index=False, float_format="%.6g",
                                                 lineterminator="\n"))
    return path
