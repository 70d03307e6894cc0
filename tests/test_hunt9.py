"""Bad input found in 2026-12-05's ninth pass: each is one line naming the problem and exit
status 2."""

from __future__ import annotations

import pytest

from helpers import one_line

READERS = [("leaderboard",), ("report",), ("check",), ("table",), ("export",),
           ("rerun",), ("prior-curve", "--attacks"), ("site", "--out", "SITE")]


def _argv(command: tuple[str, ...], folder: str, tmp_path) -> list[str]:
    if command[0] == "site":
        return ["site", folder, "--out", str(tmp_path / "site")]
    return [*command, folder]


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_every_reader_names_a_missing_folder_a_file_and_a_folder_without_records(
        tmp_path, capsys, command):
    """``leakbench export /nonexist`` said "no records under /nonexist/records" where ``diff``
    said "no such folder"; a file given as the folder read as an empty store too. Every
    command that reads a results folder now says which of the three it is."""
    missing, plain, bare = tmp_path / "nope", tmp_path / "notes.txt", tmp_path / "bare"
    plain.write_text("not a results folder")
    bare.mkdir()
    assert one_line(capsys, *_argv(command, str(missing), tmp_path)) == (
        f"leakbench: error: {missing}: no such folder")
    assert one_line(capsys, *_argv(command, str(plain), tmp_path)) == (
        f"leakbench: error: {plain}: not a folder")
    assert one_line(capsys, *_argv(command, str(bare), tmp_path)) == (
        f"leakbench: error: {bare}: no records folder (run a suite into it first)")


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_an_empty_records_folder_still_says_no_records(tmp_path, capsys, command):
    """A results folder whose store is empty is named as such, not as a missing folder."""
    folder = tmp_path / "empty"
    (folder / "records").mkdir(parents=True)
    line = one_line(capsys, *_argv(command, str(folder), tmp_path))
    assert "no records under" in line or "no attack records under" in line, line


@pytest.mark.parametrize("argv, expected", [
    (["list", "suite"], "argument kind: invalid choice: 'suite' (did you mean 'suites'?); "
                        "expected one of attacks, defenses, archs, datasets, samplers, metrics, "
                        "suites"),
    (["rnu"], "invalid choice: 'rnu' (did you mean 'run', "),
    (["run", "--device", "cdua"], "invalid choice: 'cdua' (did you mean 'cuda', 'cpu'?)"),
])
def test_a_mistyped_choice_gets_the_close_ones(capsys, argv, expected):
    """``leakbench list suite`` listed the choices with no hint; a registry name or a metric
    mistyped was already answered with "did you mean"."""
    assert expected in _parser_error(capsys, argv)


def test_a_choice_far_from_every_other_keeps_argparse_words(capsys):
    line = _parser_error(capsys, ["list", "zzz"])
    assert "invalid choice: 'zzz'" in line and "did you mean" not in line


def _parser_error(capsys, argv: list[str]) -> str:
    """argparse's refusal: exit status 2 and one line on stderr."""
    from bench.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("leakbench: error: "), err
    return err.strip()
