"""Bad input found in 2026-12-05's eighth pass (closing the last notes' left-alone items):
each is one line naming the problem and exit status 2, or a hint where a user went wrong."""

from __future__ import annotations

import os

import pytest

from helpers import TINY_SUITE, one_line, write_suite


def _text_suite(tmp_path, root):
    return write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "archs": ["transformer"],
                                              "attacks": ["tag"],
                                              "datasets": [{"textfolder": {"root": str(root)}}]})


@pytest.mark.parametrize("what", ["folder", "fifo"])
def test_a_text_folder_entry_that_is_no_file_names_the_suite_and_the_dataset(tmp_path, capsys,
                                                                             what):
    """A folder named ``notes.txt`` gave ``leakbench: error: …/notes.txt: Is a directory``:
    no suite file, no dataset (every other data error names both)."""
    root = tmp_path / "text"
    root.mkdir()
    (root / "a.txt").write_text("The quick brown fox jumps over the lazy dog near the bank.")
    odd = root / "notes.txt"
    odd.mkdir() if what == "folder" else os.mkfifo(odd)
    line = one_line(capsys, "run", str(_text_suite(tmp_path, root)), "--out",
                    str(tmp_path / "o"), "--dry-run")
    assert line.startswith(f"leakbench: error: {tmp_path / 's.yaml'}: textfolder: {odd}: ")


def test_run_given_a_claims_file_says_what_it_is_and_what_to_run(tmp_path, capsys):
    """``leakbench run bench/suites/paper-dlg.claims.yaml`` said "unknown suite key 'claims'
    (did you mean 'victim', 'client'?)": no hint that claims are checked, not run."""
    from helpers import ROOT

    claims = ROOT / "bench" / "suites" / "paper-dlg.claims.yaml"
    line = one_line(capsys, "run", str(claims), "--out", str(tmp_path / "o"), "--dry-run")
    assert line == (f"leakbench: error: {claims}: a claims file (of suite 'paper-dlg'), not a "
                    "suite: run the suite, then 'leakbench check DIR --claims FILE' tests them")
    assert not (tmp_path / "o").exists()
