"""End to end through the CLI on the built-in smoke suite."""

from __future__ import annotations

from bench.store import load_records
from helpers import run_cli


def test_smoke_suite_runs_end_to_end(tmp_path):
    out = run_cli("run", "smoke", "--out", str(tmp_path), "--jobs", "2", "--quiet")
    assert out.returncode == 0, out.stderr
    assert "smoke: 8 cells — 8 ok" in out.stdout
    records = load_records(tmp_path)
    assert len(records) == 8
    assert (tmp_path / "leaderboard.md").is_file()
    undefended = [r["metrics"]["psnr"] for r in records if r["defense"][0]["name"] == "none"]
    pruned = [r["metrics"]["psnr"] for r in records if r["defense"][0]["name"] == "prune"]
    assert min(undefended) > max(pruned)  # pruning hurts the attack on every seed
