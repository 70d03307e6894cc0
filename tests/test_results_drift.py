"""Committed results are functions of their records: regenerating gives identical bytes.

Like RobustBench's checks, this fails when leaderboard code changes without the committed
tables being regenerated (`leakbench leaderboard results/<suite>`).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bench.leaderboard import write_leaderboard
from bench.store import load_records

RESULTS = Path(__file__).resolve().parent.parent / "results"
SUITES = sorted(p.parent.name for p in RESULTS.glob("*/leaderboard.md"))


@pytest.mark.parametrize("suite", SUITES)
def test_committed_leaderboard_regenerates_byte_identically(suite, tmp_path):
    src = RESULTS / suite
    shutil.copytree(src / "records", tmp_path / "records")
    for fmt, name in (("markdown", "leaderboard.md"), ("latex", "leaderboard.tex")):
        if (src / name).exists():
            assert write_leaderboard(tmp_path, fmt).read_bytes() == (src / name).read_bytes()
    written = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    for name in written:
        assert (tmp_path / "plots" / name).read_bytes() == (src / "plots" / name).read_bytes()
    # a committed plot no table writes any more (stale) had passed unnoticed
    assert sorted(p.name for p in (src / "plots").glob("*.png")) == written


@pytest.mark.parametrize("suite", SUITES)
def test_committed_records_are_whole_and_pictured(suite):
    src = RESULTS / suite
    records = load_records(src)
    assert records
    for r in records:
        if r["status"] == "ok" and r.get("kind", "attack") == "attack":
            if r.get("text_pairs") is not None:  # a text cell keeps its sentences instead
                assert len(r["text_pairs"]) == r["batch_size"]
            else:
                assert (src / r["picture"]).is_file()


@pytest.mark.parametrize("suite", SUITES)
def test_committed_records_ran_on_committed_code(suite):
    """Every record names the commit it ran at, and none ran on a changed tree (``-dirty``):
    three soteria utility records of the defenses suite had, unnoticed (a store hunt)."""
    commits = {r["cell_id"]: str((r.get("provenance") or {}).get("git_commit"))
               for r in load_records(RESULTS / suite)}
    assert [c for c, commit in commits.items() if not re.fullmatch("[0-9a-f]{40}", commit)
            ] == []


def test_quick_results_are_committed():
    assert "quick" in SUITES


CHECKED = sorted(p.parent.name for p in RESULTS.glob("*/check.json"))


@pytest.mark.parametrize("suite", CHECKED)
def test_committed_check_tables_regenerate_byte_identically(suite, tmp_path):
    """`leakbench check` on a copy of the records gives the committed check.md/.tex/.json."""
    from bench.cli import main

    src = RESULTS / suite
    shutil.copytree(src / "records", tmp_path / "records")
    assert main(["check", str(tmp_path), "--against", str(src), "--format", "latex"]) == 0
    for name in ("check.md", "check.tex", "check.json"):
        assert (tmp_path / name).read_bytes() == (src / name).read_bytes(), name


def test_the_paper_results_are_committed_with_their_check_tables():
    assert {"paper-dlg", "paper-idlg", "paper-rgap"} <= set(CHECKED)


REPORTED = sorted(p.parent.name for p in RESULTS.glob("*/report.md"))


@pytest.mark.parametrize("suite", REPORTED)
def test_committed_report_regenerates_byte_identically(suite, tmp_path, monkeypatch):
    """`leakbench report` on a copy of the records and pictures gives the committed report
    (the README says so; only the leaderboard had been checked). The committed reports were
    written where no Inception weights lie (FID/KID n/a): so here too."""
    from bench.perceptual import FID_ENV
    from bench.report import write_report

    monkeypatch.delenv(FID_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-hub"))

    src, copy = RESULTS / suite, tmp_path / suite  # the title is the folder's name
    for part in ("records", "cells"):
        if (src / part).is_dir():
            shutil.copytree(src / part, copy / part)
    assert write_report(copy).read_bytes() == (src / "report.md").read_bytes()
