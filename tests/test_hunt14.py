"""Defects found by session 58's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cells import RunOptions
from bench.perceptual import lpips_setting, suite_lpips_setting
from bench.rerun import options_of
from bench.runner import run_suite
from bench.suite import iter_cells
from helpers import ROOT, make_suite


@pytest.mark.parametrize("values", [(0.0010000001, 0.001), (1234567.0, 1234568.0)])
def test_two_values_one_label_apart_get_two_labels(values: tuple[float, float]) -> None:
    """A label wrote floats with ``:g`` (6 digits): two noise scales had one label, so the
    table pooled them as two seeds of one row, with an interval, and an exclude rule naming
    one removed both."""
    suite = make_suite(defenses=[{"noise": {"scale": list(values)}}])
    labels = sorted(c.defense_label for c in iter_cells(suite))
    assert len(set(labels)) == 2, labels
    one = f"noise(scale={values[1]!r})" if values[1] > 1e5 else "noise(scale=0.001)"
    kept = [c.defense_label for c in iter_cells(make_suite(
        defenses=[{"noise": {"scale": list(values)}}], exclude=[{"defense": one}]))]
    assert kept == [l for l in labels if l != one]


def test_labels_of_round_values_keep_their_short_spelling() -> None:
    suite = make_suite(defenses=[{"noise": {"scale": [0.001, 1e-05, 1.0, 0.65]}}])
    assert sorted(c.defense_label for c in iter_cells(suite)) == [
        "noise(scale=0.001)", "noise(scale=0.65)", "noise(scale=1)", "noise(scale=1e-05)"]


def _only_record(out: Path) -> Path:
    (path,) = sorted((out / "records").glob("*.json"))
    return path


def test_a_resume_warns_of_records_scored_with_another_lpips_setting(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The LPIPS backbone is outside the cell id and was in no record: a folder scored
    with LPIPS off, or with AlexNet, resumed under ``lpips_net: vgg`` kept its records
    without a word, and the LPIPS column would average two networks' values."""
    run_suite(make_suite(perceptual={"lpips": False}), tmp_path, jobs=0, device="cpu",
              progress=False)
    path = _only_record(tmp_path)
    assert lpips_setting(json.loads(path.read_text())["metrics"]) == "off"
    capsys.readouterr()
    again = run_suite(make_suite(perceptual={"lpips_net": "vgg"}), tmp_path, jobs=0,
                      device="cpu", progress=False)
    err = capsys.readouterr().err
    assert again.already_done == 1
    assert "1 finished cell(s) were scored with LPIPS off, not suite t's LPIPS vgg" in err
    record = json.loads(path.read_text())  # as a machine with AlexNet's weights scores it
    record["metrics"].update(lpips=0.25, lpips_worst=0.25, lpips_note=None, lpips_net="alex")
    path.write_text(json.dumps(record))
    run_suite(make_suite(perceptual={"lpips_net": "vgg"}), tmp_path, jobs=0, device="cpu",
              progress=False)
    assert "scored with LPIPS alex, not suite t's LPIPS vgg" in capsys.readouterr().err
    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False)  # alex: the same
    assert "LPIPS" not in capsys.readouterr().err


def test_lpips_settings_read_from_records_and_suites() -> None:
    assert suite_lpips_setting({}) == "alex"
    assert suite_lpips_setting({"lpips": False, "lpips_net": "vgg"}) == "off"
    assert suite_lpips_setting({"lpips_net": "squeeze"}) == "squeeze"
    assert lpips_setting({"lpips": 0.2, "lpips_net": "vgg"}) == "vgg"
    assert lpips_setting({"lpips": None, "lpips_note": "LPIPS n/a: no weights"}) is None
    assert lpips_setting({"lpips": 0.2}) is None  # written before the backbone was recorded
    assert lpips_setting(None) is None


def test_rerun_scores_lpips_with_the_backbone_the_records_name() -> None:
    """``rerun`` scored LPIPS with AlexNet whatever network the records had used."""
    records = {"a": {"metrics": {"lpips": None, "lpips_note": "LPIPS off in the suite"}},
               "b": {"metrics": {"lpips": 0.3, "lpips_net": "vgg"}}}
    assert dict(options_of(records).perceptual)["lpips_net"] == "vgg"
    assert dict(options_of({"a": {"metrics": {}}}).perceptual)["lpips_net"] == "alex"
    assert isinstance(options_of(records), RunOptions)


def test_a_record_naming_its_lpips_backbone_is_sound_and_an_unknown_one_is_damaged() -> None:
    from bench.store import record_problem

    path = next(p for p in sorted((ROOT / "results" / "quick" / "records").glob("*.json"))
                if json.loads(p.read_text())["status"] == "ok")
    record = json.loads(path.read_text())
    record["metrics"].update(lpips=0.2, lpips_worst=0.3, lpips_note=None, lpips_net="vgg")
    assert record_problem(record, path.stem) is None
    record["metrics"]["lpips_net"] = "resnet"
    assert record_problem(record, path.stem) == "metric 'lpips_net' has a value of the wrong type"
