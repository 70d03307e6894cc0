"""Defects found in session 64, each with a test that fails on the code before it."""

from __future__ import annotations

import shutil

import pytest

from bench.cli import main
from helpers import ROOT, one_line


def test_check_writes_all_three_files_or_none(tmp_path, capsys):
    """A folder where check.tex goes was found after check.md and check.json had been
    rewritten: the three files then told two different checks."""
    store = tmp_path / "paper-dlg"
    shutil.copytree(ROOT / "results" / "paper-dlg", store)
    (store / "check.md").write_text("stale\n")
    (store / "check.json").unlink()
    (store / "check.tex").unlink()
    (store / "check.tex").mkdir()
    assert main(["check", str(store), "--format", "both"]) == 2
    err = capsys.readouterr().err
    assert "check.tex: a folder stands where" in err, err
    assert (store / "check.md").read_text() == "stale\n"
    assert not (store / "check.json").exists()


@pytest.mark.parametrize("name", ["samplers.json", "samplers.md", "samplers.png"])
def test_prior_curve_refuses_a_folder_where_its_output_goes_before_it_samples(
        tmp_path, capsys, monkeypatch, name):
    """A folder at OUT/samplers.png was found after minutes of score-model training and
    sampling, at the first write."""
    import bench.prior_curve

    def ran(*args, **kwargs):
        raise AssertionError("prior-curve sampled before it checked its outputs")

    monkeypatch.setattr(bench.prior_curve, "run_curve", ran)
    (tmp_path / "c" / name).mkdir(parents=True)
    line = one_line(capsys, "prior-curve", "--samples", "2", "--score-steps", "1", "--out",
                    str(tmp_path / "c"))
    assert line.endswith(f"a folder stands where {name} goes"), line
