"""Defects found by session 57's bad-input hunt, each pinned by a test that failed before its
fix."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from helpers import ROOT, TINY_SUITE, one_line

QUICK = ROOT / "results" / "quick" / "records"


def _quick_records(n: int = 4) -> list[dict]:
    """``n`` finished image attack records of the committed quick suite, of one dataset."""
    out = []
    for path in sorted(QUICK.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("kind", "attack") == "attack" and r["status"] == "ok" and (
                not out or r["dataset_label"] == out[0]["dataset_label"]):
            out.append(r)
        if len(out) == n:
            return out
    raise AssertionError("too few quick records")


@pytest.mark.parametrize("edit, problem", [
    (lambda r: r["input_meta"].update(shape=[3]),
     "field 'input_meta' of an image dataset is not a shape of 3 sizes (C, H, W)"),
    (lambda r: r.update(seed=-1), "seed -1 is negative"),
    (lambda r: r.update(success_rule={"metric": "nosuch", "at_least": 1, "at_most": None}),
     "field 'success_rule' names the unknown metric 'nosuch'"),
    (lambda r: r["metrics"]["per_image"].update(psnr=[]),
     "field 'metrics.per_image' is not a mapping of metric → non-empty list of numbers"),
])
def test_a_damaged_record_field_is_named(edit, problem):
    # each had passed the record check: the architecture table printed "ValueError: not
    # enough values to unpack", the caption "seed -1", the protocol line a success rule on
    # "nosuch"; every reader took them
    from bench.store import record_problem

    (record,) = _quick_records(1)
    assert record_problem(record) is None
    edit(record)
    assert record_problem(record) == problem


def test_a_plug_in_metric_the_record_scored_may_rule_success():
    # a plug-in's metric, not installed here: a finished cell scored it; a cell that did not
    # finish carries the rule without the metric (a review: they had been quarantined)
    from bench.store import record_problem

    (record,) = _quick_records(1)
    record["metrics"]["plugin_score"] = 0.5
    record["success_rule"] = {"metric": "plugin_score", "at_least": 0.4, "at_most": None}
    assert record_problem(record) is None
    record.update(status="error", metrics=None, error="RuntimeError: x")
    assert record_problem(record) is None


def test_a_plug_in_dataset_not_installed_here_keeps_its_input_shape():
    # record_modality says "image" for an unregistered dataset: a plug-in's text dataset's
    # error records had been quarantined for their one-size shape (a review)
    from bench.store import record_problem

    (record,) = _quick_records(1)
    record.update(status="error", metrics=None, error="RuntimeError: x",
                  dataset={"name": "mytext", "params": {}, "shown": []},
                  input_meta={"shape": [16], "num_classes": 2})
    assert record_problem(record) is None


def test_the_architecture_table_says_when_its_records_disagree_on_the_input(tmp_path):
    # one record's input_meta edited to another plausible shape: the table had built the
    # model at it in silence (1×8×8, 7 683 parameters, against 3×16×16's)
    from bench.leaderboard.tables import architecture_table

    records = _quick_records(4)
    rows = architecture_table(records).frame
    assert "n/a" not in set(rows["Parameters"])
    records[1]["input_meta"] = {"shape": [1, 8, 8], "num_classes": 3}
    rows = architecture_table(records).frame
    row = rows[rows["Input"].str.startswith(records[1]["dataset_label"])
               & (rows["Arch"] == records[1]["arch_label"])].iloc[0]
    assert row["Parameters"] == "n/a"
    assert "the records disagree on the input" in row["Note"] and "1×8×8, 3 classes (1 " \
        "records)" in row["Note"]


@pytest.mark.parametrize("dry", [False, True])
@pytest.mark.parametrize("setup", ["loop", "dangling", "records_file", "cells_file",
                                   "records_dangling"])
def test_a_dry_run_refuses_the_out_folder_its_run_refuses(setup, dry, tmp_path, capsys):
    # each dry run had listed the cells "to run", exit 0, where the run refused the folder
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE))
    out = tmp_path / "out"
    if setup == "loop":
        os.symlink(tmp_path / "loop2", out)
        os.symlink(out, tmp_path / "loop2")
    elif setup == "dangling":
        os.symlink(tmp_path / "nosuch", out)
    else:
        out.mkdir()
        part = out / ("cells" if setup == "cells_file" else "records")
        if setup == "records_dangling":
            os.symlink(tmp_path / "nosuch", part)
        else:
            part.write_text("")
    line = one_line(capsys, "run", str(path), "--out", str(out), "--jobs", "0",
                    *(["--dry-run"] if dry else []))
    if setup in ("loop", "dangling"):
        assert line == (f"leakbench: error: {out}: a symbolic link to {os.readlink(out)}, "
                        "which is missing or a loop")
    elif setup == "records_dangling":
        assert line == (f"leakbench: error: {out / 'records'}: a symbolic link to "
                        f"{tmp_path / 'nosuch'}, which is missing or a loop")
    else:
        assert line == f"leakbench: error: {part}: exists and is not a folder"


def test_a_text_folder_file_that_is_not_utf8_is_named(tmp_path, capsys):
    # its bad bytes had become U+FFFD in the vocabulary and the private sentences, exit 0
    root = tmp_path / "tf"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.txt").write_text("hello world this is a sentence.\nanother one is here.\n")
    (root / "b.txt").write_bytes(b"caf\xe9 au lait is nice.\n")
    suite = {"name": "t", "seeds": 1, "batch_size": 1,
             "datasets": [{"textfolder": {"root": str(root), "task": "classify", "classes": 2,
                                          "seq_len": 4, "vocab_size": 16}}],
             "archs": [{"transformer": {"width": 8, "layers": 1, "heads": 1}}],
             "defenses": ["none"], "attacks": [{"dlg": {"steps": 2}}]}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(suite))
    line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert line == (f"leakbench: error: {path}: textfolder: {root / 'b.txt'}: not UTF-8 text "
                    "(byte 3): the text folder's files are UTF-8")
    (root / "b.txt").write_bytes(b"\xef\xbb\xbfcaf\xe9 au lait is nice.\n")  # the offset
    line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert line.endswith("b.txt: not UTF-8 text (byte 6): the text folder's files are UTF-8")
    (root / "b.txt").write_bytes("café au lait is nice.\n".encode())  # counts the mark
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0


def _claims(tmp_path: Path, where: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"suite": "quick", "claims": [
        {"id": "c1", "paper": "P", "sentence": "S", "where": where, "metric": "psnr",
         "expect": {"at_least": 10}}]}))
    return path


@pytest.mark.parametrize("where, problem", [
    ({"attack": "dlgg"}, "attack 'dlgg': no registered attack and no record's is named 'dlgg' "
                         "(did you mean 'dlg', 'idlg'?)"),
    ({"attack": "dlg", "defense": "secagg(clients=2)+nois"},
     "defense 'secagg(clients=2)+nois': no registered defense and no record's is named 'nois' "
     "(did you mean 'noise', 'none'?)"),
])
def test_a_claim_naming_no_component_is_warned_of(where, problem, tmp_path, capsys):
    # a typo had read "no cell ran (none with attack=dlgg)", not run, exit 0, in silence; it
    # stays not run (a plug-in of another machine is named so too), with a warning
    shutil.copytree(QUICK, tmp_path / "r" / "records")
    assert main(["check", str(tmp_path / "r"), "--claims", str(_claims(tmp_path, where))]) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"leakbench: warning: check: claim c1: {problem}" in err
    assert "not run" in (tmp_path / "r" / "check.md").read_text()


@pytest.mark.parametrize("where", [{"attack": "dlg", "defense": "secagg(clients=2)+noise"},
                                   {"attack": "idlg [granted labels]", "arch": "lenet"}])
def test_a_claim_on_registered_components_not_run_stays_not_run(where, tmp_path, capsys):
    # a row label of the tables ("[granted labels]") names its attack before the bracket
    shutil.copytree(QUICK, tmp_path / "r" / "records")
    claims = _claims(tmp_path, where)
    assert main(["check", str(tmp_path / "r"), "--claims", str(claims)]) == 0
    assert "not run" in (tmp_path / "r" / "check.md").read_text()
    assert "no registered" not in capsys.readouterr().err


def test_check_refuses_a_reference_giving_one_claim_twice(tmp_path, capsys):
    # the last row had won: a claim held and then "not run" in a damaged reference was no
    # longer guarded (its breakage passed the gate, exit 0)
    shutil.copytree(ROOT / "results" / "paper-dlg" / "records", tmp_path / "r" / "records")
    reference = tmp_path / "check.json"
    reference.write_text(json.dumps({"rows": [
        {"claim": "dlg-recovers-batch-1", "verdict": "holds"},
        {"claim": "dlg-recovers-batch-1", "verdict": "not run"}]}))
    line = one_line(capsys, "check", str(tmp_path / "r"), "--against", str(reference))
    assert line == (f"leakbench: error: {reference}: row 1: claim 'dlg-recovers-batch-1' is "
                    "given twice")


def test_the_utility_setting_shown_is_the_one_with_most_runs_not_most_skipped_records():
    # a merged store: setting A ran 2 records, setting B holds 3 whose cells were skipped; B
    # had been chosen by its record count and the Defenses table showed no utility run
    import pandas as pd

    from bench.leaderboard import utility_summary

    rows = [{"dataset": "d", "arch": "a", "defense": "none", "seed": k, "status": status,
             "accuracy": acc, "update_cosine": 1.0, "chance": 0.1, "cell_id": f"u{k}",
             "epsilon": None, "scenario": k, "setting": setting}
            for k, (status, acc, setting) in enumerate(
                [("ok", 0.8, "steps=30"), ("ok", 0.9, "steps=30"), ("skipped", None, "steps=5"),
                 ("skipped", None, "steps=5"), ("skipped", None, "steps=5")])]
    summary = utility_summary(pd.DataFrame(rows), "d", "a")
    assert summary.attrs["utility_setting"] == "steps=30"
    assert summary.attrs["utility_left_out"] == {"steps=5": 3}
    assert summary.set_index("defense").loc["none", "accuracy"] == pytest.approx(0.85)
