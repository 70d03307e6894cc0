"""``leakbench rerun``: fresh runs of committed cells against the committed intervals."""

from __future__ import annotations

import json
import math

import pytest

from bench.registry import LeakbenchError
from bench.rerun import prediction_interval, report, rerun
from bench.runner import run_suite
from helpers import make_suite, run_cli


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("rerun")
    suite = make_suite(seeds=3, datasets=[{"digits": {"size": 8}}],
                       archs=[{"mlp": {"hidden": 16}}], attacks=["analytic"])
    run_suite(suite, out, jobs=0, device="cpu", progress=False)
    return out


def test_prediction_interval_is_wider_than_the_mean_interval():
    lo, hi = prediction_interval([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; s = 1; half = 4.3027 * sqrt(1 + 1/3)
    assert math.isclose(hi - 2.0, 4.302652729911275 * math.sqrt(4 / 3), rel_tol=1e-9)
    assert math.isclose(lo, 4.0 - hi)
    assert prediction_interval([5.0]) is None


def test_rerun_on_the_same_machine_reproduces_and_lies_inside(store):
    checks = rerun(store, 2, jobs=0)
    assert len(checks) == 2 and all(c.fresh == c.committed for c in checks)
    text = report(checks)
    assert "bit-identical to the committed value: 2/2" in text


def test_the_report_says_which_cells_shared_a_batched_pass(store, tmp_path):
    """A re-run runs each cell alone; a record of a pass it shared with other cells rounds
    differently, so its 'not bit-identical' is expected, and the report says so."""
    import shutil

    batched = tmp_path / "batched"
    shutil.copytree(store, batched)
    paths = sorted((batched / "records").glob("*.json"))
    ids = [json.loads(p.read_text())["cell_id"] for p in paths]
    for path in paths:
        r = json.loads(path.read_text())
        path.write_text(json.dumps({**r, "trial_batch": {"cells": ids, "trials": len(ids)}}))
    checks = rerun(batched, 2, jobs=0)
    assert all(c.batched for c in checks)
    assert "(2 of the cells ran in a batched pass with others and were re-run alone" in \
        report(checks)
    assert not any(c.batched for c in rerun(store, 2, jobs=0))
    from bench.leaderboard.frames import shared_pass

    assert not shared_pass({"trial_batch": {"cells": ids, "fallback": "RuntimeError: x"}})


def test_rerun_flags_values_outside_a_doctored_interval(store, tmp_path):
    import shutil

    doctored = tmp_path / "doctored"
    shutil.copytree(store, doctored)
    for path in (doctored / "records").glob("*.json"):
        r = json.loads(path.read_text())
        if r["status"] == "ok":
            r["metrics"]["psnr"] = 10.0 + 0.01 * r["seed"]  # a tight row far below the truth
            path.write_text(json.dumps(r))
    checks = rerun(doctored, 3, jobs=0)
    assert all(c.in_ci is False and c.in_pi is False for c in checks)
    assert "inside the committed 95% CI of the row's mean: 0/3" in report(checks)


def test_the_report_says_why_a_fresh_cell_failed(store, monkeypatch):
    """A fresh cell that fails re-ran as an error row valued at its floor, with no reason
    anywhere in the report."""
    from attacks.analytic import Analytic

    assert "ended" not in report(rerun(store, 1, jobs=0))

    def fails(self, obs):
        raise RuntimeError("the attack broke here")

    monkeypatch.setattr(Analytic, "reconstruct", fails)
    checks = rerun(store, 1, jobs=0)
    assert checks[0].status == "error" and "the attack broke here" in (checks[0].error or "")
    assert f"{checks[0].cell_id} ended error here: attack: RuntimeError: the attack" in \
        report(checks)


def test_a_record_this_leakbench_cannot_build_is_refused(store, tmp_path):
    """A record naming an attack this leakbench lacks re-ran as an error row, valued at its
    floor and counted inside the committed interval; it cannot be re-run, so it is refused."""
    import shutil

    renamed = tmp_path / "renamed"
    shutil.copytree(store, renamed)
    for path in (renamed / "records").glob("*.json"):
        r = json.loads(path.read_text())
        r["attack"]["name"] = "analytik"
        path.write_text(json.dumps(r))
    with pytest.raises(LeakbenchError, match="does not validate.*unknown attack 'analytik'"):
        rerun(renamed, 1, jobs=0)


def test_cli_rerun_prints_the_fraction(store):
    out = run_cli("rerun", str(store), "--sample", "1", "--jobs", "0")
    assert out.returncode == 0, out.stderr
    assert "inside the committed 95% CI of the row's mean" in out.stdout


def test_intervals_are_cut_to_the_metrics_range(store, tmp_path):
    import shutil

    doctored = tmp_path / "spread"
    shutil.copytree(store, doctored)
    for path in (doctored / "records").glob("*.json"):
        r = json.loads(path.read_text())
        if r["status"] == "ok":  # seeds at 0.5, 5.5 and 95.5 dB: t-intervals reach below 0 dB
            r["metrics"]["psnr"] = [0.5, 5.5, 95.5][r["seed"] % 3]  # and above 100 dB
            path.write_text(json.dumps(r))
    checks = rerun(doctored, 3, jobs=0)
    assert checks and all(c.ci is not None and c.pi is not None for c in checks)
    assert all(c.ci[0] == 0.0 and c.ci[1] == 100.0 for c in checks)  # PSNR's [0, 100]
    assert all(0.0 <= c.pi[0] <= c.pi[1] <= 100.0 for c in checks)


def test_the_metric_follows_the_records_modality(store, capsys):
    """By default the records' leaderboard metric (PSNR here, ROUGE-1 for text); a metric no
    record can have is refused before a cell runs (a text folder re-run on PSNR reported
    n/a for every cell)."""
    from pathlib import Path

    from bench.cli import main
    from bench.leaderboard import records_frame
    from bench.leaderboard.text_tables import records_metric
    from bench.store import load_records

    assert rerun(store, 1, jobs=0)[0].metric == "psnr"
    text = Path(__file__).resolve().parent.parent / "results" / "text"
    assert records_metric(records_frame(load_records(text)), None, "--metric").name == "rouge1"
    assert main(["rerun", str(text), "--metric", "psnr", "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("leakbench: error: --metric psnr: a metric of image cells, and the records "
                   "are text cells (default: rouge1)")


@pytest.mark.parametrize("metric, message", [
    ("fid", "--metric fid: a pooled metric has no per-row interval; rerun compares the "
            "per-item metrics"),
    ("kid", "pooled metric"),
    ("lpips", "--metric lpips: LPIPS n/a: put"),
    ("psnr,ssim", "rerun compares one metric")])
def test_a_metric_with_no_value_per_cell_is_refused_before_a_cell_runs(
        metric, message, store, capsys, monkeypatch, tmp_path):
    """FID (pooled) and LPIPS without weights were accepted, ran every drawn cell and
    reported n/a for each; now one line, exit 2, and no cell runs."""
    from bench.cli import main

    monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", str(tmp_path / "no-such-weights.pth"))

    def no_cells(*args, **kwargs):
        raise AssertionError("a cell ran")

    monkeypatch.setattr("bench.rerun.make_executor", no_cells)
    assert main(["rerun", str(store), "--metric", metric, "--jobs", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_records_without_optional_fields_or_with_an_old_identity_rerun(store, tmp_path):
    """A record without client, victim, grants or budget (store and frames read them as the
    defaults) raised KeyError 'client'; one whose identity no longer hashes to its cell_id
    (an older leakbench's) came back under another id, a KeyError too."""
    import shutil

    old = tmp_path / "old"
    shutil.copytree(store, old)
    paths = sorted((old / "records").glob("*.json"))
    for i, path in enumerate(paths):
        r = json.loads(path.read_text())
        for key in ("client", "victim", "granted", "budget"):
            r.pop(key, None)
        if i == 0:  # the same run, under an identity that hashes elsewhere
            r["budget"] = {"max_iterations": None}
        path.write_text(json.dumps(r))
    checks = rerun(old, len(paths), jobs=0)
    assert sorted(c.cell_id for c in checks) == sorted(p.stem for p in paths)
    assert all(c.fresh == c.committed for c in checks)


def test_rerun_only_reads_the_folder(store, tmp_path, capsys):
    """A damaged record is named and left in place (it was moved to quarantine/, even by a
    refused --sample 0)."""
    import shutil

    from bench.cli import main

    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    bad = sorted((copy / "records").glob("*.json"))[0]
    bad.write_text("{not json")
    assert main(["rerun", str(copy), "--sample", "0", "--jobs", "0"]) == 2
    assert main(["rerun", str(copy), "--sample", "1", "--jobs", "0"]) == 0
    assert "left in place" in capsys.readouterr().err
    assert bad.exists() and not (copy / "records" / "quarantine").exists()


def test_a_cell_that_timed_out_reruns_under_its_own_limit(store, tmp_path, monkeypatch):
    """rerun ran every cell under a fixed 600 s: a cell that had timed out under its suite's
    1 s came back "ok" after up to 10 minutes and was judged against the intervals."""
    import shutil

    import bench.rerun as rerun_module

    copy = tmp_path / "timed-out"
    shutil.copytree(store, copy)
    paths = sorted((copy / "records").glob("*.json"))
    for path in paths:
        r = json.loads(path.read_text())
        r.update(status="timeout", error="exceeded the cell timeout of 1.5s")
        path.write_text(json.dumps(r))
    limits = []
    real = rerun_module.make_executor

    def recording(name, device, timeout, jobs, **kw):
        limits.append(timeout)
        return real("inline", device, timeout, 0, **kw)

    monkeypatch.setattr(rerun_module, "make_executor", recording)
    rerun(copy, 1, jobs=1)
    assert limits == [1.5]  # its own limit, below the default
    limits.clear()
    rerun(copy, 1, jobs=1, timeout=0.5)
    assert limits == [0.5]  # --timeout stays the cap
    limits.clear()
    rerun(store, 1, jobs=1, timeout=30)
    assert limits == [30]  # a finished cell: --timeout
    with pytest.raises(LeakbenchError, match="--timeout: expected a positive number"):
        rerun(store, 1, jobs=0, timeout=0)
