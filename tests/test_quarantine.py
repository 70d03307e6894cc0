"""Damaged records are quarantined, never trusted: every reader skips them, names each in one
warning line, moves it to records/quarantine/, and treats its cell as not done."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.runner import plan, run_suite
from bench.store import QUARANTINE, load_records, record_problem
from helpers import make_suite, write_suite

SUITE = {"seeds": 3}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("clean")
    run_suite(make_suite(**SUITE), out, jobs=0, device="cpu", progress=False)
    return out


def damage(clean: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of ``clean`` with one truncated and one wrong-shape record, plus strays."""
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    paths = sorted((out / "records").glob("*.json"))
    truncated, wrong = paths[0], paths[1]
    truncated.write_text(truncated.read_text()[:100])
    record = json.loads(wrong.read_text())
    record["attack"] = "dlg"  # a string where a component belongs
    wrong.write_text(json.dumps(record))
    (out / "records" / "0000000000000000.json").write_bytes(b"\xff\xfe binary")
    (out / "records" / "1111111111111111.json").write_text("[1, 2, 3]")
    bad = {truncated.name: "not valid JSON", wrong.name: "'attack' is not a dict",
           "0000000000000000.json": "not UTF-8", "1111111111111111.json": "not a JSON object"}
    return out, bad


def check_quarantined(out: Path, err: str, bad: dict[str, str]) -> None:
    warnings = [line for line in err.splitlines() if line.startswith("leakbench: warning:")]
    assert len(warnings) == len(bad), err
    for name, reason in bad.items():
        [line] = [w for w in warnings if name in w]
        assert reason in line and QUARANTINE in line
        assert (out / "records" / QUARANTINE / name).is_file()
        assert not (out / "records" / name).exists()
    assert "Traceback" not in err


def test_leaderboard_renders_the_valid_records_and_quarantines_the_rest(clean, tmp_path,
                                                                        capsys) -> None:
    out, bad = damage(clean, tmp_path)
    assert main(["leaderboard", str(out)]) == 0
    err = capsys.readouterr().err
    check_quarantined(out, err, bad)
    assert (out / "leaderboard.md").is_file()
    assert len(load_records(out)) == 1  # the one sound record of three


@pytest.mark.parametrize("command", ["export", "report"])
def test_export_and_report_skip_damaged_records(command, clean, tmp_path, capsys) -> None:
    out, bad = damage(clean, tmp_path)
    assert main([command, str(out)]) == 0
    check_quarantined(out, capsys.readouterr().err, bad)


def test_resume_and_retry_failed_treat_a_damaged_record_as_not_done(clean, tmp_path,
                                                                    capsys) -> None:
    out, bad = damage(clean, tmp_path)
    suite = make_suite(**SUITE)
    statuses = [s for _, s in plan(suite, out, retry_failed=True)]
    assert statuses.count("done") == 1 and statuses.count("to run") == 2
    check_quarantined(out, capsys.readouterr().err, bad)
    summary = run_suite(suite, out, jobs=0, device="cpu", progress=False)
    assert summary.already_done == 1 and summary.counts["ok"] == 2
    assert len(load_records(out)) == 3


GOOD = {"suite": "t", "cell_id": "a", "status": "ok", "seed": 0,
        "defense": [{"name": "x", "params": {}}], "arch": {"name": "lenet", "params": {}},
        "dataset": {"name": "d", "params": {}}, "defense_label": "x", "arch_label": "lenet",
        "dataset_label": "d", "attack": {"name": "dlg", "params": {}}, "attack_label": "dlg",
        "batch_size": 1, "metrics": {"psnr": 1.0}}
"""A sound record (components carry their params: without them the frames' defense strength
and rerun's cells fail on a KeyError)."""


def test_record_problems_cover_the_schema() -> None:
    good = GOOD
    assert record_problem(good, "a") is None
    for change, reason in [({"status": "fine"}, "status"), ({"kind": "movie"}, "kind"),
                           ({"batch_size": True}, "batch_size"), ({"cell_id": "b"}, "file"),
                           ({"metrics": {"psnr": "high"}}, "psnr"), ({"metrics": [1]}, "metrics"),
                           ({"defense": [{"nom": 1}]}, "name"),
                           # finite values no metric or suite can produce (a hand-edited or
                           # damaged record would crash the plots downstream)
                           ({"metrics": {"psnr": 150.0}}, "outside its range [0, 100]"),
                           ({"metrics": {"ssim_worst": -1.5}}, "'ssim_worst'"),
                           ({"metrics": {"label_acc": 2}}, "label_acc"),
                           ({"metrics": {"lpips": -0.5}}, "outside its range [0, inf]"),
                           ({"metrics": {"lpips": 1e308}}, "beyond what any metric takes"),
                           ({"metrics": {"ssim": 10 ** 400}}, "beyond"),  # no float overflow
                           ({"metrics": {"custom_score": 1e308}}, "beyond"),
                           ({"floor_metrics": {"psnr": 1e308}}, "floor metric 'psnr'"),
                           ({"floor_metrics": [1]}, "floor_metrics"),
                           ({"batch_size": 10 ** 30}, "batch_size"),
                           ({"batch_size": 0}, "batch_size"),
                           # the tables counted a success of 1 (or 0.3) as true, check as
                           # false: a claim held in one and failed in the other
                           ({"metrics": {"psnr": 9.0, "success": 1}}, "'success'"),
                           ({"metrics": {"psnr": 9.0, "success": 0.3}}, "'success'"),
                           ({"metrics": {"psnr": True}}, "'psnr'"),
                           # a list where a metric's number goes read as n/a: the table's n
                           # and mean changed with no warning
                           ({"metrics": {"psnr": 9.0, "ssim": [1, 2]}}, "'ssim'"),
                           ({"metrics": {"psnr": 9.0, "lpips_worst": {"a": 1}}}, "'lpips_worst'"),
                           ({"metrics": {"psnr": 9.0, "success": [True]}}, "'success'")]:
        assert reason in record_problem({**good, **change}, "a")
    # the ends of a range are values; an open-ended metric, an unknown key and a note are free
    for extra in [{"metrics": {"psnr": 100.0, "ssim": -1.0, "mse": 1.0}},
                  {"metrics": {"psnr": 9.0, "lpips": 7.5, "kid": -0.01, "custom_score": 5.0}},
                  {"metrics": {"psnr": 9.0, "lpips_note": "no weights"}},
                  {"dataset": {"name": "pydoc", "params": {}},  # text: ranked by ROUGE-1
                   "metrics": {"rouge1": 0.5}},
                  {"status": "diverged", "metrics": {}}, {"status": "skipped", "metrics": None},
                  {"metrics": {"psnr": 9.0, "success": False}},
                  {"metrics": {"psnr": 9.0, "success": None}},
                  {"floor_metrics": {"psnr": 12.0, "lpips": None}}]:
        assert record_problem({**good, **extra}, "a") is None
    # a finished attack without the metric it is ranked by: the leaderboard's best-and-worst
    # pictures formatted None and leaderboard, report and site crashed
    for metrics in [{}, None, {"psnr": None}, {"ssim": 0.5}, {"rouge1_note": "n/a"},
                    {"rouge1": 0.5}]:  # an image record's is PSNR, whatever else it has
        image = {**good, "dataset": {"name": "digits", "params": {}}, "metrics": metrics}
        assert "without psnr, the metric it is ranked by" in (record_problem(image, "a") or "")
    text = {**good, "dataset": {"name": "pydoc", "params": {}}, "metrics": {"psnr": 30.0}}
    assert "without rouge1" in record_problem(text, "a")
    assert "ranked by" in record_problem({k: v for k, v in good.items() if k != "metrics"}, "a")


@pytest.mark.parametrize("change, reason", [
    ({"granted": [1, 2]}, "grant"),
    ({"client": {"bn_mode": ["x"]}}, "client field 'bn_mode'"),
    ({"client": {"mode": 5}}, "client field 'mode'"),
    ({"client": {"lr": {"x": 1}}}, "client field 'lr'"),
    ({"victim": 5}, "'victim' is not a str"),
    ({"peak_memory_bytes": 10 ** 19}, "peak_memory_bytes"),  # the export cast it to Int64
    ({"peak_memory_bytes": "x"}, "peak_memory_bytes"),
    # rerun trains a record's victim again: trained:999999999 ran ~1e9 SGD steps
    ({"victim": "trained:999999999"}, "field 'victim': 'trained:999999999' trains for more"),
    ({"victim": "trained:²"}, "field 'victim'"), ({"victim": "pretrained"}, "field 'victim'"),
    ({"budget": "x"}, "'budget' is not a dict"),
    ({"curve": "abc"}, "'curve' is not a list"),
    ({"curve": [{"grad_evals": "a", "seconds": 1.0, "psnr": 3.0, "final": True}]}, "curve"),
    ({"curve": [{"grad_evals": 3}]}, "curve"),
    ({"trial_batch": "x"}, "'trial_batch' is not a dict"),
    ({"trial_batch": {"time_share": ["equal"]}}, "trial_batch.time_share"),
    ({"converged_at": "x"}, "'converged_at' is not a dict"),
    ({"converged_at": {"seconds": "soon"}}, "converged_at.seconds"),
    ({"attack_info": {"restarts_run": "x"}}, "attack_info.restarts_run"),
    ({"defense_info": {"epsilon": "x"}}, "defense_info.epsilon"),
    ({"success_psnr": "x"}, "success_psnr"),
    ({"success_psnr": True}, "success_psnr"),
    ({"defense": [{"name": "noise"}]}, "params"),
    ({"arch": {"name": "lenet", "params": None}}, "params"),
    ({"timing": {"attack_seconds": float("nan")}}, "timing.attack_seconds is not a finite"),
    ({"loss_trace": [1.0, float("inf")]}, "loss_trace[1] is not a finite"),
    ({"curve": [{"grad_evals": 1, "seconds": float("-inf"), "psnr": 3.0}]},
     "curve[0].seconds is not a finite"),
    # the site's gallery and rerun crashed on these (found by a bad-input fuzz)
    ({"metrics": {"psnr": 10.0, "per_image": [1]}}, "metrics.per_image"),
    ({"metrics": {"psnr": 10.0, "per_image": {"psnr": ["x"]}}}, "metrics.per_image"),
    ({"attack": {"name": "dlg", "params": {}, "shown": 5}}, "'shown'"),
    ({"arch": {"name": "lenet", "params": {}, "shown": [1]}}, "'shown'"),
    ({"arrays": "cells/a\u0000b.npy"}, "'arrays' is not a file name under cells/"),
    ({"picture": 5}, "'picture' is not a file name under cells/"),
    # merge wrote a picture at records/b.json over b's record (a bad-input hunt)
    ({"picture": "records/b.json"}, "'picture' is not a file name under cells/"),
    ({"arrays": "cells/../records/b.json"}, "under cells/"),
    ({"arrays": "/etc/x.npy"}, "under cells/"),
    ({"grad_evals": 10 ** 400}, "grad_evals"),  # math.isfinite overflowed: a traceback
    ({"curve": [{"grad_evals": 10 ** 400, "seconds": 1.0, "psnr": 3.0}]}, "curve point"),
    ({"curve": [{"grad_evals": 2, "seconds": 1.0, "psnr": 10 ** 400}]}, "psnr"),
    # a future layout, or a hand edit, was read as version 1
    ({"record_version": 999}, "written by a newer leakbench (record_version 999; this one "
                              "reads 1 to 1)"),
    ({"record_version": 0}, "record_version 0 is not one this leakbench reads (1 to 1)"),
    ({"record_version": "x"}, "record_version 'x'"),
    ({"record_version": None}, "record_version None"),
    # the leaderboard and rerun crashed on these (found by a review)
    ({"utility": "x"}, "'utility' is not a dict"),
    ({"success_rule": {"metric": "ssim", "at_least": "x", "at_most": None}}, "success_rule"),
    ({"success_rule": "psnr"}, "success_rule"),
    ({"arch": {"name": "lenet", "params": {}, "shown": None}}, "'shown'"),
    # an attack record hand-edited to kind utility: every reader dropped it silently
    ({"kind": "utility"}, "missing field 'utility'"),
    # found by a bad-input hunt: seven commands crashed (unhashable pool key), the text
    # tables and rerun crashed, the architecture table built LeNet at 3x20000x20000
    ({"derived_seeds": {"scenario": [1]}}, "'derived_seeds'"),
    ({"derived_seeds": {"scenario": True}}, "'derived_seeds'"),
    ({"base_seed": "x"}, "'base_seed' is not an integer"),
    ({"defense": []}, "empty chain"),
    ({"trial_batch": {"cells": 5}}, "'trial_batch'"),
    ({"trial_batch": {"cells": [1]}}, "'trial_batch'"),
    ({"trial_batch": {"cells": ["a"], "trials": "8"}}, "'trial_batch'"),
    ({"text_pairs": 5}, "'text_pairs'"),
    ({"text_pairs": [{"original": 3}]}, "'text_pairs'"),
    ({"input_meta": {"shape": [3, 20000, 20000], "num_classes": 10}}, "'input_meta'"),
    ({"input_meta": {"shape": [3, 8192, 8192], "num_classes": 10}}, "'input_meta'"),
    ({"input_meta": {"shape": [3, 8, 8], "num_classes": 1 << 25}}, "'input_meta'"),
    ({"input_meta": {"shape": [3, 8, 8], "num_classes": 0}}, "'input_meta'"),
    ({"input_meta": [3, 8, 8]}, "'input_meta'"),
    ({"curve": [{"grad_evals": 20, "seconds": 1.0, "psnr": 1e308}]}, "psnr"),
    ({"curve": [{"grad_evals": 20, "seconds": -1e308, "psnr": 3.0}]}, "curve point seconds"),
    ({"grad_evals": "many"}, "field 'grad_evals' is not a number"),
    ({"grad_evals": -5}, "grad_evals -5 is outside"),
    ({"timing": {"attack_seconds": "fast"}}, "'timing.attack_seconds' is not a number")])
def test_nested_fields_that_crash_readers_are_problems(change, reason) -> None:
    """Each passed record_problem and then crashed the leaderboard, export, diff, table or
    rerun (a NaN timing crashed merge's writer half-way through OUT)."""
    problem = record_problem({**GOOD, **change}, "a")
    assert problem is not None and reason in problem, problem


def test_null_and_default_nested_fields_are_sound() -> None:
    """Absent and null read as the defaults (frames.record_client, record_victim)."""
    for extra in [{"client": {"mode": None, "bn_mode": "eval", "lr": 0.1}}, {"victim": None},
                  # suites took these before the rule tightened: their records stay readable
                  {"victim": "trained:0"}, {"victim": "trained:05"},
                  {"granted": []}, {"curve": None}, {"success_psnr": None},
                  {"success_psnr": 20}, {"defense_info": {"epsilon": None, "loss": 1.5}},
                  {"converged_at": {"grad_evals": 3, "seconds": 0.5, "reason": "plateau"}},
                  {"trial_batch": {"time_share": "equal", "cells": ["a"]}},
                  {"input_meta": {"shape": [12], "num_classes": 4}},  # text
                  {"input_meta": {"shape": [3, 32, 32], "num_classes": 10}},
                  {"text_pairs": [{"original": ["a"], "recovered": ["b"], "correct": [False]}]},
                  {"derived_seeds": {"scenario": 3, "attack": 4}}]:
        assert record_problem({**GOOD, **extra}, "a") is None, extra


def test_readers_quarantine_records_that_crashed_them(clean, tmp_path, capsys) -> None:
    """The leaderboard on a folder with such records: each named in one line and
    quarantined, no traceback."""
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    paths = sorted((out / "records").glob("*.json"))
    edits = [{"client": {"bn_mode": ["x"]}}, {"defense_info": {"epsilon": "x"}}]  # one sound
    for path, change in zip(paths, edits):
        record = json.loads(path.read_text())
        record.update(change)
        path.write_text(json.dumps(record))
    assert main(["leaderboard", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("damaged record") == 2 and "Traceback" not in err
    assert len(list((out / "records" / QUARANTINE).glob("*.json"))) == 2



def test_a_dry_run_names_damaged_records_and_moves_nothing(clean, tmp_path, capsys) -> None:
    """``run --dry-run`` writes nothing and holds no lock: it moved damaged records to
    quarantine/ all the same."""
    out, bad = damage(clean, tmp_path)
    before = sorted(p.name for p in (out / "records").iterdir())
    suite = write_suite(tmp_path / "t.yaml", name="t", timeout=120, **SUITE)
    assert main(["run", str(suite), "--out", str(out), "--dry-run"]) == 0
    captured = capsys.readouterr()
    assert "1 done" in captured.out and "2 to run" in captured.out
    assert captured.err.count("left in place") == len(bad)
    assert sorted(p.name for p in (out / "records").iterdir()) == before


def refuse_reading(monkeypatch, name: str) -> None:
    """``name`` cannot be read (as a record with mode 000 for a user other than root)."""
    original = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == name:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


@pytest.mark.parametrize("command", [["leaderboard"], ["export"], ["run", "--dry-run"],
                                     ["merge"]])
def test_a_record_that_cannot_be_read_is_never_quarantined(command, clean, tmp_path, capsys,
                                                           monkeypatch) -> None:
    """An intact record the system refuses to read was taken for damaged and moved to
    quarantine/ (its cell then re-run): now the command ends with one line naming it."""
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    locked = sorted((out / "records").glob("*.json"))[1]
    refuse_reading(monkeypatch, locked.name)
    if command[0] == "run":
        suite = write_suite(tmp_path / "t.yaml", name="t", timeout=120, **SUITE)
        args = ["run", str(suite), "--out", str(out), *command[1:]]
    elif command[0] == "merge":
        args = ["merge", str(tmp_path / "merged"), str(out)]
    else:
        args = [*command, str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"leakbench: error: {locked}: cannot be read (Permission denied); left "
                   "where it is: fix its permissions (or the disk) and run again"]
    assert locked.exists() and not (out / "records" / QUARANTINE).exists()
    assert not (tmp_path / "merged" / "records").exists()


def test_a_record_that_vanishes_mid_scan_is_skipped_not_an_error(clean, tmp_path, capsys,
                                                                 monkeypatch) -> None:
    """Readers take no lock: another one may quarantine a file between the listing and the
    read. That file is simply gone (no quarantine, no 'fix its permissions' error)."""
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    gone = sorted((out / "records").glob("*.json"))[1]
    original, calls = Path.stat, []

    def stat(self: Path, *args, **kwargs):
        if self.name == gone.name and self.parent.name == "records":
            calls.append(self)
            if len(calls) == 2:  # listed and seen as a file, then moved away before the read
                gone.unlink(missing_ok=True)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    records = load_records(out)
    assert gone.stem not in {r["cell_id"] for r in records} and records
    assert not (out / "records" / QUARANTINE).exists()
    assert "cannot be read" not in capsys.readouterr().err


def test_an_artifact_name_with_a_nul_is_not_shown(tmp_path, capsys) -> None:
    """resolve() raised ValueError (embedded null byte) in merge, site, report, prior-curve."""
    from bench.pictures import artifact_path

    assert artifact_path(tmp_path, "cells/a\0b.npy", "c1") is None
    assert "NUL character" in capsys.readouterr().err
