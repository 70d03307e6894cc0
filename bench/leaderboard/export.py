"""``leakbench export``: one flat CSV row per cell, in a fixed column and row order."""

from __future__ import annotations

from pathlib import Path

from bench.leaderboard.frames import records_frame
from bench.registry import LeakbenchError
from bench.store import load_records, write_atomic

# The CSV's schema, frozen: a new column (a new metric's) goes at the end, so existing
# readers and committed files keep their layout.
EXPORT_COLUMNS = [
    "cell_id", "suite", "attack", "defense", "arch", "dataset", "batch_size", "seed", "status",
    "psnr", "ssim", "mse", "label_acc", "attack_seconds",
    "psnr_worst", "ssim_worst", "mse_worst", "success", "lpips",
    "attack_name", "defense_name", "arch_name", "dataset_name", "mode", "bn_mode", "victim",
    "granted", "iterations", "grad_evals", "setup_seconds", "score_seconds",
    "peak_memory_bytes", "memory_kind", "device", "device_name", "torch", "leakbench",
    "git_commit", "epsilon", "error",
]


def export(out_dir: Path, fmt: str = "csv", output: Path | None = None) -> Path:
    """One flat row per cell, in a stable column and row order."""
    if fmt != "csv":
        raise LeakbenchError(f"unknown export format {fmt!r} (expected csv)")
    df = records_frame(load_records(Path(out_dir)))
    if df.empty:
        raise LeakbenchError(f"no records under {Path(out_dir) / 'records'}")
    path = Path(output) if output else Path(out_dir) / "cells.csv"
    write_atomic(path, df[EXPORT_COLUMNS].to_csv(index=False, float_format="%.6g",
                                                 lineterminator="\n"))
    return path
