"""Stored baselines that pin behaviour across refactors: every built-in suite's cell ids, and
the smoke suite's metrics on the machine that wrote them.

    python tests/baselines.py --write    # only when a change is *meant* to alter results
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.provenance import cpu_fingerprint

DATA = Path(__file__).resolve().parent / "data"
CELL_IDS = DATA / "cell_ids.json"
SMOKE_METRICS = DATA / "smoke_metrics.json"
SMOKE_KEYS = ("psnr", "ssim", "mse", "label_acc", "success")


def suite_cell_ids() -> dict[str, list[str]]:
    """Every built-in suite's cell ids (attack and utility cells), in expansion order."""
    from bench.suite import all_cells, builtin_suites, load_suite

    return {name: [c.cell_id for c in all_cells(load_suite(name))] for name in builtin_suites()}


def smoke_metrics(out_dir: Path) -> dict[str, dict[str, Any]]:
    """Run the smoke suite inline with two torch threads; its metrics by cell id.

    The thread count is fixed, not the machine's cores: reductions split by threads, so the
    stored values (written inline on a 2-core machine, whose default is 2 threads) are only
    reproducible at 2 threads, whatever the cores of the machine that checks them."""
    from bench.runner import run_suite
    from bench.store import load_records
    from bench.suite import load_suite

    run_suite(load_suite("smoke"), out_dir, jobs=0, device="cpu", progress=False, threads=2)
    return {r["cell_id"]: {"status": r["status"],
                           **{k: (r["metrics"] or {}).get(k) for k in SMOKE_KEYS}}
            for r in load_records(out_dir)}


def write() -> None:
    import tempfile

    DATA.mkdir(exist_ok=True)
    CELL_IDS.write_text(json.dumps(suite_cell_ids(), indent=1, sort_keys=True) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        metrics = smoke_metrics(Path(tmp))
    SMOKE_METRICS.write_text(json.dumps({"machine": cpu_fingerprint(), "cells": metrics},
                                        indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    write()
