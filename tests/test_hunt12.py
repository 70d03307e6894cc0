"""Defects found by session 54's hunts, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from bench.cli import main
from helpers import ROOT, TINY_SUITE


def _section(text: str, heading: str) -> str:
    return text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]


def _leaderboard(tmp_path: Path, suite: str) -> str:
    from bench.leaderboard import write_leaderboard

    shutil.copytree(ROOT / "results" / suite / "records", tmp_path / "records")
    return write_leaderboard(tmp_path).read_text()


def test_the_text_attack_tables_note_names_their_shares_not_label_accuracy(tmp_path):
    # the text note was the image note with another floor: it explained a label accuracy
    # column text tables never show, and not the Wilson intervals of token accuracy and
    # exact match; the text defense note did not say whose metrics it shows
    text = _leaderboard(tmp_path, "text")
    attacks = _section(text, "Text attacks")
    assert "| Token acc" in attacks and "| Exact" in attacks and "Label acc" not in attacks
    assert "label accuracy" not in attacks
    assert "Token acc and Exact, shares: [their 95% Wilson intervals]" in attacks
    defenses = _section(text, "Text defenses")
    assert "the metrics and Success are that strongest attack's" in defenses


@pytest.mark.parametrize("suite", ["quick", "text"])
def test_the_attack_tables_note_says_grad_evals_is_a_median(tmp_path, suite):
    # the column is the median over finished seeds; only time's header said "median"
    heading = "Text attacks" if suite == "text" else "Attacks"
    attacks = _section(_leaderboard(tmp_path, suite), heading)
    assert "| Grad evals" in attacks
    assert "Median time and grad evals: over the finished seeds" in attacks


def test_the_image_attack_tables_note_names_label_accuracy_as_a_share(tmp_path):
    attacks = _section(_leaderboard(tmp_path, "quick"), "Attacks")
    assert "Label acc, a share: [its 95% Wilson interval]" in attacks


def test_no_run_lock_is_committed_under_results():
    # results/paper-idlg/.lock (PID 4886 on host "vm") was committed: every fresh clone's
    # merge, resume or run into that folder was refused until the reader deleted a tracked
    # file, and on a host named "vm" the lock was taken over (its worker PID waited on)
    import subprocess

    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                            text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    assert [p for p in listed.stdout.splitlines() if Path(p).name in (".lock", ".lock.guard")
            ] == []
    ignored = subprocess.run(["git", "check-ignore", "-q", "results/quick/.lock"], cwd=ROOT)
    assert ignored.returncode == 0  # a run's lock can never be committed by `git add -A`


def test_the_environment_lines_name_the_utility_runs_commits_too(tmp_path):
    # the defenses leaderboard's privacy-utility columns come from utility records whose
    # commits (one of them a dirty tree) the Environment line left out: it read the attack
    # records alone
    import json

    shutil.copytree(ROOT / "results" / "quick" / "records", tmp_path / "records")
    utility = json.loads(next((ROOT / "results" / "defenses" / "records").glob("u*.json"))
                         .read_text())
    utility = {**utility, "suite": "quick",
               "provenance": {**utility["provenance"], "git_commit": "f" * 40}}
    (tmp_path / "records" / f"{utility['cell_id']}.json").write_text(json.dumps(utility))
    from bench.leaderboard import write_leaderboard

    environment = write_leaderboard(tmp_path).read_text().split("Environment:", 1)[1]
    assert "fffffff" in environment.split("\n\n", 1)[0]


@pytest.mark.parametrize("dry", [False, True])
def test_a_run_and_its_dry_run_refuse_an_out_below_a_file(dry, tmp_path, capsys):
    # --out FILE/sub: the run failed at its first write ("Not a directory") after its
    # setup, and its dry run listed the cells as to run, exit 0 (a bad-input hunt)
    import yaml

    from helpers import TINY_SUITE, one_line

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(TINY_SUITE))
    (tmp_path / "afile").write_text("x")
    line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "afile" / "sub"),
                    "--jobs", "0", *(["--dry-run"] if dry else []))
    assert line == f"leakbench: error: {tmp_path / 'afile'}: exists and is not a folder"


def test_a_dry_run_refuses_the_lpips_weights_its_run_refuses(tmp_path, capsys):
    # the dry run listed the cells as to run, exit 0; the run then refused the file
    import yaml

    from bench.cli import main
    from helpers import TINY_SUITE

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "perceptual": {
        "lpips_weights": str(tmp_path / "nope.pth")}}))
    code = main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"leakbench: error: perceptual.lpips_weights: no weights file "
                                 f"at {tmp_path / 'nope.pth'}"]
    assert not (tmp_path / "o").exists()
    path.write_text(yaml.safe_dump({**TINY_SUITE, "perceptual": {  # nothing left to run: as
        "lpips": False, "lpips_weights": str(tmp_path / "nope.pth")}}))  # the run, no check
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--dry-run"]) == 0


def _resume_after_editing_a_record(tmp_path, edit) -> None:
    """Run a two-seed tiny suite, ``edit`` one record's provenance, remove the other record,
    resume (so that a cell runs beside the kept one)."""
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": 2}))
    out = tmp_path / "o"
    flags = ["--out", str(out), "--jobs", "0", "--quiet", "--no-leaderboard"]
    assert main(["run", str(suite), *flags]) == 0
    first, second = sorted((out / "records").glob("*.json"))
    record = json.loads(first.read_text())
    edit(record["provenance"])
    first.write_text(json.dumps(record))
    second.unlink()
    assert main(["run", str(suite), *flags]) == 0


NOW = "0123456789abcdef0123456789abcdef01234567"
BEFORE = "fedcba9876543210fedcba9876543210fedcba98"


def _resume_at(tmp_path, capsys, monkeypatch, before: str, differs: bool | None) -> str:
    """Resume where one finished record ran at commit ``before``, this checkout at NOW,
    git saying their code differs (``differs``); the warnings printed."""
    import bench.provenance

    def edit(provenance):
        provenance["git_commit"] = before
        monkeypatch.setattr(bench.provenance, "git_commit", lambda: NOW)
        monkeypatch.setattr(bench.provenance, "code_differs", lambda a, b: differs)

    _resume_after_editing_a_record(tmp_path, edit)
    return capsys.readouterr().err


@pytest.mark.parametrize("before,differs,words", [
    (BEFORE, True, "1 finished cell(s) ran at another commit (1 at fedcba987654) than this "
     "run's (0123456789ab), whose code differs"),
    (NOW + "-dirty", None, "(1 at 0123456789ab-dirty) than this run's (0123456789ab)"),
    (BEFORE, None, "ran at another commit (1 at fedcba987654)"),  # a commit git does not hold
])
def test_resuming_says_when_finished_cells_ran_at_a_commit_of_other_code(
        tmp_path, capsys, monkeypatch, before, differs, words):
    """Resume had warned of another device or kernels only: cells run at another commit were
    pooled with the new ones under one leaderboard row, silently."""
    err = _resume_at(tmp_path, capsys, monkeypatch, before, differs)
    assert words in err and "the leaderboard pools them" in err


def test_resuming_after_commits_that_leave_the_code_alone_warns_of_nothing(
        tmp_path, capsys, monkeypatch):
    """A commit of results or docs changes nothing a cell computes (the project commits its
    records after running them): no warning."""
    err = _resume_at(tmp_path, capsys, monkeypatch, BEFORE, False)
    assert "another commit" not in err and "another CPU" not in err


def test_code_differs_reads_the_checkouts_history():
    from bench.provenance import code_differs, git_commit

    head = git_commit()
    if head is None or head.endswith("-dirty"):
        pytest.skip("needs a clean git checkout of leakbench")
    assert code_differs(head, head) is False
    assert code_differs("0" * 40, head) is None  # a commit the checkout does not hold


@pytest.mark.parametrize("field,value,words", [
    ("cpu_model", "Some Other CPU", "1 finished cell(s) ran on another CPU (1 on Some Other "
     "CPU ("),
    ("cpu_isa", "SOME_ISA", " (SOME_ISA)) than this one ("),  # the same model, other kernels
])
def test_resuming_says_when_finished_cells_ran_on_another_cpu(tmp_path, capsys, field, value,
                                                              words):
    _resume_after_editing_a_record(tmp_path, lambda provenance: provenance.update({field: value}))
    err = capsys.readouterr().err
    assert words in err and "the leaderboard pools them" in err


def test_resuming_where_every_finished_cell_ran_here_warns_of_nothing(tmp_path, capsys):
    from bench.provenance import cpu_isa, cpu_model

    _resume_after_editing_a_record(
        tmp_path, lambda provenance: provenance.update(cpu_model=cpu_model(), cpu_isa=cpu_isa()))
    err = capsys.readouterr().err
    assert "another commit" not in err and "another CPU" not in err


def test_a_cluster_run_compares_no_cpu(tmp_path, capsys):
    """Cells a cluster runs record its nodes' CPU, not the driver's."""
    from bench.resume import FolderPlan
    from bench.suite import parse_suite

    plan = FolderPlan(parse_suite({**TINY_SUITE, "name": "t"}, source="t"), tmp_path)
    plan.kept_cpus = {"Some Other CPU (AVX2)": 3}
    plan.warn_settings(torch.device("cpu"), "onednn", cluster=True)
    assert "another CPU" not in capsys.readouterr().err
    plan.warn_settings(torch.device("cpu"), "onednn")
    assert "3 finished cell(s) ran on another CPU" in capsys.readouterr().err


def test_cosmetic_bad_input_names_the_problem_once(tmp_path, capsys):
    """Four messages a bad-input hunt found wrong or silent: a stray '|' in --where had said
    "no record has attack=''", a stray comma in diff's --metric was accepted, prior-curve
    named a blocking file twice, and the record validator said "is not a int"."""
    from helpers import one_line

    quick = str(ROOT / "results" / "quick")
    line = one_line(capsys, "table", quick, "--where", "attack=dlg|")
    assert line == ("leakbench: error: --where 'attack=dlg|': an empty alternative beside '|'; "
                    "drop the stray '|' or finish the alternative")
    line = one_line(capsys, "diff", quick, quick, "--metric", "psnr,,ssim")
    assert line == ("leakbench: error: --metric 'psnr,,ssim': an empty name between commas; "
                    "drop the stray comma or finish the name")
    blocking = tmp_path / "afile"
    blocking.write_text("x")
    line = one_line(capsys, "prior-curve", "--out", str(blocking))
    assert line == f"leakbench: error: --out {blocking}: exists and is not a folder"
    line = one_line(capsys, "prior-curve", "--out", str(blocking / "sub"))
    assert line == f"leakbench: error: --out {blocking / 'sub'}: {blocking}: exists and is not " \
                   "a folder"
    from bench.store import record_problem

    record = json.loads(sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]
                        .read_text())
    assert record_problem({**record, "seed": "0"}) == "field 'seed' is not an integer"
    assert record_problem({**record, "victim": 5}) == "field 'victim' is not a str"


def test_repeated_metric_options_are_all_compared():
    """The stray-comma check had reused the list it walked: `--metric psnr --metric ssim`
    compared ssim alone (a review's finding)."""
    from bench.metrics.base import resolve_per_item

    names = lambda given: [m.name for m in resolve_per_item(given)]  # noqa: E731
    assert names(["psnr", "ssim"]) == ["psnr", "ssim"]
    assert names(["psnr", "ssim,mse"]) == ["psnr", "ssim", "mse"]
    assert names(["psnr", ""]) == ["psnr"]  # an empty option adds nothing, as before


def test_where_splits_alternatives_outside_parentheses_only():
    """A label's own '|' (a parameter value such as ``chain=conv|fc``) had split the label in
    two, so ``--where`` matched neither half and a claim could not name it; only a '|'
    outside parentheses separates alternatives, as only a comma outside them separates
    conditions."""
    from bench.leaderboard.where import parse_where

    assert parse_where(["defense=noise(a|b)|none,attack=dlg|ig"]) == {
        "defense": ["noise(a|b)", "none"], "attack": ["dlg", "ig"]}
    assert parse_where(["attack=rgap(chain=conv|fc, x=1)"]) == {
        "attack": ["rgap(chain=conv|fc, x=1)"]}
    from bench.claims.schema import _value_problem

    assert _value_problem("attack", "rgap(chain=conv|fc)") is None  # a claim may name it
    assert "[dlg, rgap(chain=conv|fc)]" in _value_problem("attack", "dlg|rgap(chain=conv|fc)")


def test_resume_judges_a_skipped_cell_anew(tmp_path):
    """A skipped record had stayed done: a cell a fixed plug-in now takes was never run on
    resume, and a cell skipped for another reason now kept the old one."""
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    suite = make_suite(batch_size=[1, 2], attacks=[{"dlg": {"steps": 2}},
                                                   {"idlg": {"steps": 2}}])
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = {r["cell_id"]: r for r in load_records(tmp_path)}
    (skipped,) = [r for r in records.values() if r["status"] == "skipped"]  # iDLG at batch 2
    ran = next(r for r in records.values() if r["status"] == "ok")
    reason = skipped["skip_reason"]
    for record, why in ((skipped, "an older reason"), (ran, "the plug-in took no such cell")):
        path = tmp_path / "records" / f"{record['cell_id']}.json"
        path.write_text(json.dumps({**record, "status": "skipped", "error": why,
                                    "skip_reason": why}))
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert again.counts["ok"] == 1 and again.counts["skipped"] == 1 and again.already_done == 2
    now = {r["cell_id"]: r for r in load_records(tmp_path)}
    assert now[skipped["cell_id"]]["skip_reason"] == reason
    assert now[ran["cell_id"]]["status"] == "ok"
    third = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert third.already_done == 4 and sum(third.counts.values()) == 0


def test_an_ascii_terminal_gets_escapes_not_a_traceback(tmp_path):
    """With PYTHONIOENCODING=ascii a '—' in the run's summary or a '×' in rank's shape was a
    UnicodeEncodeError traceback, exit 1, after the run's work was done (a bad-input hunt);
    such characters now print as backslash escapes."""
    import os
    import subprocess
    import sys

    from helpers import write_suite

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "ascii"}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env,
                              capture_output=True, timeout=300)

    rank = cli("rank", "lenet")
    assert rank.returncode == 0 and b"Traceback" not in rank.stderr, rank.stderr
    assert b"on 3\\xd732\\xd732 inputs" in rank.stdout
    suite = write_suite(tmp_path / "one.yaml")
    run = cli("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "1", "--quiet")
    assert run.returncode == 0 and b"Traceback" not in run.stderr, run.stderr
    assert b"\\u2014" in run.stdout + run.stderr  # the summary's dash, escaped


def test_a_ray_address_needs_a_host_even_in_a_dry_run(capsys, tmp_path):
    """':80', 'ray://' and 'ray://:80' passed the check (and a dry run), drew the progress
    bar, then failed to connect: two lines (a bad-input hunt)."""
    import yaml

    from bench.executors.base import address_problem
    from helpers import TINY_SUITE, one_line

    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    for address in (":80", "ray://", "ray://:80", "[]:80", "ray:///"):
        line = one_line(capsys, "run", str(suite), "--executor", "ray", "--dry-run",
                        "--ray-address", address, "--out", str(tmp_path / "o"))
        assert line == (f"leakbench: error: --ray-address {address!r}: no host; expected "
                        "auto, HOST:PORT or ray://HOST:PORT"), address
    for address in ("auto", "head", "[::1]:6379", "ray://head:10001/", "10.0.0.1:6379"):
        assert address_problem(address) is None, address


def test_a_run_whose_leaderboard_cannot_be_written_stops_before_its_cells(tmp_path, capsys):
    """A file named plots in --out (or a folder named leaderboard.md) had ended the run with
    an error after every cell had run (a bad-input hunt); --no-leaderboard writes none."""
    from helpers import one_line, write_suite

    suite = str(write_suite(tmp_path / "one.yaml"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "plots").write_text("x")
    line = one_line(capsys, "run", suite, "--out", str(out), "--jobs", "0")
    assert line == (f"leakbench: error: {out / 'plots'}: exists and is not a folder (the "
                    "leaderboard's figures go there)")
    assert not (out / "records").exists()  # before any cell ran
    (out / "plots").unlink()
    (out / "leaderboard.md").mkdir()
    line = one_line(capsys, "run", suite, "--out", str(out), "--jobs", "0")
    assert line.endswith("leaderboard.md: a folder stands where the leaderboard goes")
    from bench.cli import main

    assert main(["run", suite, "--out", str(out), "--jobs", "0", "--no-leaderboard",
                 "--quiet"]) == 0


def test_an_image_that_fails_as_it_is_decoded_names_its_file(tmp_path):
    """A truncated PNG passes the preflight's header check and fails when decoded: the
    cell's error record had said only "image file is truncated" (a bad-input hunt)."""
    import io

    import pytest
    from PIL import Image

    from bench.datasets.imagefolder import _open_image

    buffer = io.BytesIO()
    Image.effect_noise((32, 32), 64).convert("RGB").save(buffer, format="PNG")  # ~3 kB
    whole = tmp_path / "whole.png"
    whole.write_bytes(buffer.getvalue())
    assert _open_image(str(whole)).size == (32, 32)
    cut = tmp_path / "cut.png"
    cut.write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    with pytest.raises(OSError, match=f"^{cut}: "):
        _open_image(str(cut))


def test_report_names_the_pictures_it_links_that_are_missing_or_damaged(tmp_path, capsys):
    """A picture deleted, or replaced by junk, was linked from report.md in silence (an
    unreadable arrays file already got a warning; a bad-input hunt)."""
    import re
    import shutil

    from bench.cli import main

    folder = tmp_path / "quick"
    shutil.copytree(ROOT / "results" / "quick", folder)
    assert main(["report", str(folder)]) == 0
    assert "warning" not in capsys.readouterr().err
    linked = re.findall(r"\]\((cells/[0-9a-f]+\.png)\)", (folder / "report.md").read_text())
    first, second = sorted(set(linked))[:2]
    (folder / first).unlink()
    (folder / second).write_bytes(b"\x89PNG\r\n\x1a\n junk")
    assert main(["report", str(folder)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "report: 2 linked file(s) missing or unreadable" in err
