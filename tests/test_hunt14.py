"""Defects found by session 58's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.cells import RunOptions
from bench.perceptual import lpips_setting, suite_lpips_setting
from bench.rerun import options_of
from bench.runner import run_suite
from bench.suite import iter_cells
from helpers import ROOT, TINY_SUITE, make_suite, one_line


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
    record["metrics"].update(lpips=0.25, lpips_worst=0.25, lpips_note=None,
                             lpips_scoring={"net": "alex"})
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
    assert lpips_setting({"lpips": 0.2, "lpips_scoring": {"net": "vgg"}}) == "vgg"
    assert lpips_setting({"lpips": None, "lpips_note": "LPIPS n/a: no weights"}) is None
    assert lpips_setting({"lpips": 0.2}) is None  # written before the backbone was recorded
    assert lpips_setting(None) is None


def test_rerun_scores_lpips_with_the_backbone_the_records_name() -> None:
    """``rerun`` scored LPIPS with AlexNet whatever network the records had used."""
    records = {"a": {"metrics": {"lpips": None, "lpips_note": "LPIPS off in the suite"}},
               "b": {"metrics": {"lpips": 0.3, "lpips_scoring": {"net": "vgg"}}}}
    assert dict(options_of(records).perceptual)["lpips_net"] == "vgg"
    assert dict(options_of({"a": {"metrics": {}}}).perceptual)["lpips_net"] == "alex"
    assert isinstance(options_of(records), RunOptions)


def test_a_record_naming_its_lpips_backbone_is_sound_and_an_unknown_one_is_damaged() -> None:
    from bench.store import record_problem

    path = next(p for p in sorted((ROOT / "results" / "quick" / "records").glob("*.json"))
                if json.loads(p.read_text())["status"] == "ok")
    record = json.loads(path.read_text())
    record["metrics"].update(lpips=0.2, lpips_worst=0.3, lpips_note=None,
                             lpips_scoring={"net": "vgg"})
    assert record_problem(record, path.stem) is None
    record["metrics"]["lpips_scoring"] = {"net": "resnet"}
    assert record_problem(record, path.stem) == (
        "field 'metrics.lpips_scoring' is not {net: one of alex, vgg, squeeze}")


DENORMALS = """
import sys, numpy as np, torch
import bench.pipeline as pipeline
x = torch.from_numpy(np.full(1 << 21, 1e-40, dtype=np.float32))  # two threads' worth
set_mode = pipeline.fix_float_mode


def spy():  # the cell's own call, then the same product across the pool, as the cell runs
    set_mode()
    print("unflushed", int((x * 1.0 != 0).sum()), "threads", torch.get_num_threads())


pipeline.fix_float_mode = spy
{run}
"""


@pytest.mark.parametrize("run", [
    # leakbench run --jobs 0: the cells run in the CLI's own process and its pool threads
    "from bench.cli import main\n"
    "assert main(['run', sys.argv[1], '--out', sys.argv[2], '--jobs', '0', '--threads', '2',"
    " '--no-leaderboard']) == 0",
    # a Ray task, called as a fresh Ray worker calls it: with the cell's JSON
    "import json\n"
    "from bench.executors.ray import _run_cell\n"
    "from bench.cells import RunOptions\n"
    "cell = json.loads(open(sys.argv[1].replace('.yaml', '.json')).read())\n"
    "list(_run_cell(cell, RunOptions(), 'cpu', 2))",
], ids=["inline", "ray-task"])
def test_cells_run_inline_or_in_a_ray_task_flush_denormals_in_every_torch_thread(
        run: str, tmp_path: Path) -> None:
    """The flush-to-zero mode is per thread, inherited by threads made afterwards: the Ray
    task and ``run --jobs 0`` warmed the worker (its pool threads made) before the cell set
    the mode, so half of each two-thread operation kept denormals, unlike the process
    workers (a runner review: 1 048 576 of 2 097 152 unflushed)."""
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({"name": "t", **TINY_SUITE}))
    (tmp_path / "s.json").write_text(json.dumps(next(iter_cells(make_suite())).to_json()))
    script = tmp_path / "denormals.py"
    script.write_text(DENORMALS.format(run=run))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(script), str(suite), str(tmp_path / "out")],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "unflushed 0 threads 2" in done.stdout, done.stdout


def test_a_cell_no_worker_began_is_no_cell_timeout_and_a_resume_runs_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    """A task whose worker had not started 120 s + the limit after its hand-off was recorded
    "exceeded the cell timeout of Ts", the suite's own limit, so a resume kept it as done
    (a runner review): the cell had not run at all."""
    import bench.executors.process as process
    from bench.executors.base import timed_out_under
    from bench.stages import never_began

    monkeypatch.setattr(process, "STARTUP_GRACE_SECONDS", 0.0)  # a slower start than 120 s
    suite = make_suite(timeout=0.5)
    run_suite(suite, tmp_path, jobs=1, threads=1, progress=False)
    record = json.loads(_only_record(tmp_path).read_text())
    assert record["status"] == "timeout" and never_began(record["error"])
    assert timed_out_under(record["error"]) is None
    monkeypatch.setattr(process, "STARTUP_GRACE_SECONDS", 120.0)
    capsys.readouterr()
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)  # same limit
    assert again.already_done == 0 and again.counts["ok"] == 1
    assert "1 cell(s) failed without beginning (no worker started them): they run again" in \
        capsys.readouterr().err


# --- the bad-input hunt ------------------------------------------------------------------


@pytest.mark.parametrize("attack", [{"ig": {"iterations": 2, "lr": 1.0e39}},
                                    {"tag": {"iterations": 2, "lr": 1.0e39}}])
def test_an_adam_step_size_beyond_float32_is_refused_at_load(attack, tmp_path, capsys) -> None:
    """The suite was taken, then every cell became an error record ("value cannot be
    converted to type float without overflow"), exit 0."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **TINY_SUITE, "attacks": [attack]}))
    line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert "lr" in line and "3.40282e+38" in line, line


def test_an_unmakeable_cache_folder_is_refused_before_any_cell_runs(
        tmp_path, capsys, monkeypatch) -> None:
    """LEAKBENCH_CACHE under /proc had every trained-victim cell end in an error record
    ("FileNotFoundError: … '/proc/leak'"), exit 0."""
    monkeypatch.setenv("LEAKBENCH_CACHE", "/proc/leakbench-cache")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "t", **TINY_SUITE}))
    line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--jobs", "0")
    assert "$LEAKBENCH_CACHE /proc/leakbench-cache: cannot be made" in line, line
    assert not (tmp_path / "o" / "records").exists() or not any(
        (tmp_path / "o" / "records").iterdir())


@pytest.mark.parametrize("edit, problem", [
    ({"accuracy": 5.0}, "utility metric 'accuracy' is 5.0, outside [0, 1]"),
    ({"update_cosine": 9.0}, "utility metric 'update_cosine' is 9.0, outside [-1, 1]"),
    ({"chance": 7}, "utility metric 'chance' is 7, outside [0, 1]"),
    ({"eval_size": -4}, "utility metric 'eval_size' is -4, not a count"),
    ({"eval_size": 2.5}, "utility metric 'eval_size' is 2.5, not a count"),
])
def test_a_utility_record_with_an_impossible_value_is_damaged(edit, problem) -> None:
    """An accuracy of 5 or a cosine of 9 had been shown in the Defenses table, and starred."""
    from bench.store import record_problem

    path = next(p for p in sorted((ROOT / "results" / "defenses" / "records").glob("*.json"))
                if json.loads(p.read_text()).get("kind") == "utility")
    record = json.loads(path.read_text())
    assert record_problem(record, path.stem) is None
    record["metrics"].update(edit)
    assert record_problem(record, path.stem) == problem


@pytest.mark.parametrize("value", ["no\nne", "no\x1bne"])
def test_a_claim_value_with_a_control_character_is_refused(value, tmp_path, capsys) -> None:
    """A line break in a ``where`` value split check.md's table row, and the claim read "not
    run", exit 0."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"suite": "quick", "claims": [
        {"id": "c1", "paper": "P", "sentence": "S", "metric": "psnr",
         "where": {"attack": "dlg(steps=2)", "defense": value}, "expect": {"at_least": 10}}]}))
    line = one_line(capsys, "check", str(ROOT / "results" / "quick"), "--claims", str(path))
    assert "a control character" in line and "where.defense" in line, line


# --- the published-outputs review -------------------------------------------------------


def test_a_strength_plot_draws_one_line_per_defense_setting_besides_its_strength() -> None:
    """Gaussian and Laplace noise had been one "noise" line, zig-zagging between them."""
    from bench.leaderboard.frames import defense_strength, strength_line

    def noise(distribution: str, variance: float, shown: tuple = ("distribution",)) -> list:
        return [{"name": "noise", "params": {"distribution": distribution,
                                            "variance": variance, "scale": None},
                 "shown": [*shown, "variance"]}]

    lines = {strength_line(noise(d, v)) for d in ("gaussian", "laplace") for v in (1e-4, 1e-2)}
    assert lines == {"noise(distribution=gaussian)", "noise(distribution=laplace)"}
    assert strength_line(noise("gaussian", 0.1, shown=())) == "noise"
    assert defense_strength(noise("laplace", 0.01)) == 0.01
    chain = [{"name": "prune", "params": {"ratio": 0.3}, "shown": ["ratio"]}]
    assert strength_line(chain) == "prune" and strength_line(chain * 2) is None


def test_a_cell_starting_with_a_star_keeps_it_after_the_row_break() -> None:
    """After ``\\\\`` LaTeX reads a following ``*`` (spaces and line break skipped) as
    ``\\\\*`` and drops the star from the next row's first cell."""
    from bench.latex import tex

    assert tex("*starred") == "{}*starred" and tex("a*b") == "a*b"
    assert tex("*", {"*": "$*$"}) == "$*$"


def test_the_tables_caption_says_bold_needs_two_entries(capsys) -> None:
    """A one-entry row is never bold; the caption had promised "the best mean of its row"."""
    from bench.cli import main

    assert main(["table", str(ROOT / "results" / "paper-dlg"), "--where", "batch_size=1",
                 "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "a row of two entries or more" in out


# --- the review of this session's change --------------------------------------------------


def test_a_copy_naming_its_lpips_backbone_agrees_with_an_older_copy_without_it() -> None:
    """merge had called the two copies of one cell a conflict ([lpips_net null ≠ "alex"])."""
    from bench.merge import Copy

    path = next(p for p in sorted((ROOT / "results" / "quick" / "records").glob("*.json"))
                if json.loads(p.read_text())["status"] == "ok")
    older = json.loads(path.read_text())
    newer = json.loads(path.read_text())
    newer["metrics"]["lpips_scoring"] = {"net": "alex"}
    assert Copy(path, 0, older).result() == Copy(path, 1, newer).result()


def test_a_numpy_float_label_reads_as_a_plain_float() -> None:
    import numpy as np

    from bench.identity import _fmt

    assert _fmt(np.float64(0.00031622776601683794)) == "0.00031622776601683794"
    assert _fmt(np.float64(0.5)) == "0.5"


def test_a_star_after_leading_spaces_keeps_it_too() -> None:
    from bench.latex import tex

    assert tex("  *x") == "{}  *x"
