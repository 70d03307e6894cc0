"""Markdown pipe tables (bench/markdown.py): a ``|`` in a label cannot split a row."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd

from bench.markdown import Markdown, pipe_table
from helpers import ROOT


def _cells(line: str) -> int:
    """The cells of a pipe-table line: its unescaped bars, less one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_every_form_of_table_escapes_bars_once():
    frame = pd.DataFrame({"Attack": ["a|b", "c"], "n|m": ["1", "2"]})
    rows = [["a|b", Markdown("already \\| markdown")], ["c", "d"]]
    for text in (pipe_table(frame), pipe_table(frame.to_dict("records")),
                 pipe_table(rows, ["x|y", "z"])):
        lines = text.splitlines()
        assert {_cells(line) for line in lines} == {2}, text
    assert "already \\| markdown" in pipe_table(rows, ["x", "z"])  # as it is, not \\\\|
    assert "a\\\\|b" in pipe_table([["a\\|b"]], ["x"])  # a label's own backslash, then \|
    assert pipe_table([], ["x"]).splitlines()[0].startswith("| x")


def test_a_label_with_a_bar_keeps_the_leaderboard_rows_whole(tmp_path):
    """An attack label holding ``|`` (a path parameter, a hand-edited record) shifted every
    later cell of its rows one column to the right."""
    from bench.cli import main

    out = tmp_path / "quick"
    shutil.copytree(ROOT / "results/quick/records", out / "records")
    for path in (out / "records").glob("*.json"):
        record = json.loads(path.read_text())
        if record.get("attack_label", "").startswith("dlg"):
            record["attack_label"] += "|x"
            path.write_text(json.dumps(record, indent=1, sort_keys=True))
    assert main(["leaderboard", str(out)]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "dlg(steps=100)\\|x" in board
    table: list[str] = []
    for line in board.splitlines() + [""]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            assert len({_cells(t) for t in table}) == 1, table
            table = []
