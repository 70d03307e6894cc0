"""Bad input a third hunt found (2026-12-05): each is one line and exit status 2, or runs
correctly, where it had been a traceback, a silent wrong answer or minutes of work first."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.cli import main
from helpers import ROOT, TINY_SUITE

NO_HOME = "~nosuchuser-leakbench/x"


def one_line(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The command's error: exit 2, one line on stderr, no traceback."""
    code = main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("leakbench: error: "), err
    return lines[0]


def write_suite(tmp_path: Path, **overrides: object) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, **overrides}))
    return str(path)


@pytest.mark.parametrize("where", ["cache", "data", "root", "fid", "textroot"])
def test_a_tilde_naming_no_user_is_one_line(where, tmp_path, capsys, monkeypatch):
    """``Path.expanduser`` raised RuntimeError ("Could not determine home directory") from
    $LEAKBENCH_CACHE, $LEAKBENCH_DATA, a dataset's root and --fid-weights: a traceback."""
    args = ["run", write_suite(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"]
    if where in ("cache", "data", "root"):  # a dry run reads no cache and opens no data
        args.remove("--dry-run")
    if where == "cache":
        monkeypatch.setenv("LEAKBENCH_CACHE", NO_HOME)
    elif where == "data":
        monkeypatch.setenv("LEAKBENCH_DATA", NO_HOME)
        args[1] = write_suite(tmp_path, datasets=["mnist"], archs=["mlp"])
    elif where == "root":
        args[1] = write_suite(tmp_path, datasets=[{"mnist": {"root": NO_HOME}}])
    elif where == "textroot":
        args[1] = write_suite(tmp_path, datasets=[{"textfolder": {"root": NO_HOME}}],
                              archs=["transformer"], attacks=["tag"])
    else:
        args = ["report", str(ROOT / "results" / "quick"), "--fid-weights", NO_HOME]
    assert f"{NO_HOME}: '~' here names no user with a home directory" in one_line(capsys, *args)
