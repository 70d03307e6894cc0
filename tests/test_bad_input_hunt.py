"""Bad input a third hunt found (2026-12-05): each is one line and exit status 2, or runs
correctly, where it had been a traceback, a silent wrong answer or minutes of work first."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from helpers import ROOT, TINY_SUITE, one_line

NO_HOME = "~nosuchuser-leakbench/x"


def write_suite(tmp_path: Path, **overrides: object) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, **overrides}))
    return str(path)


@pytest.mark.parametrize("where", ["cache", "data", "root", "fid", "textroot", "lpips"])
def test_a_tilde_naming_no_user_is_one_line(where, tmp_path, capsys, monkeypatch):
    """``Path.expanduser`` raised RuntimeError ("Could not determine home directory") from
    $LEAKBENCH_CACHE, $LEAKBENCH_DATA, a dataset's root and --fid-weights: a traceback."""
    args = ["run", write_suite(tmp_path), "--out", str(tmp_path / "o"), "--dry-run"]
    if where in ("cache", "data", "root", "lpips"):  # a dry run reads no cache and opens no
        args.remove("--dry-run")  # data
    if where == "lpips":
        monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", NO_HOME)
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


def copy_records(src: Path, dst: Path, keep: int) -> list[Path]:
    """The first ``keep`` records of ``src`` (a committed folder) under ``dst/records``."""
    (dst / "records").mkdir(parents=True)
    files = sorted((src / "records").glob("*.json"))[:keep]
    for f in files:
        (dst / "records" / f.name).write_bytes(f.read_bytes())
    return sorted((dst / "records").glob("*.json"))


def edit(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


@pytest.mark.parametrize("rule, sound", [
    ({"metric": "psnr", "at_least": 20, "at_most": None}, True),
    ({"metric": "psnr", "at_least": 20, "at_most": None, "extra": 1}, False),
    ({"metric": "psnr", "at_least": None, "at_most": None}, False),
    ({"metric": "psnr", "at_least": 20, "at_most": 1}, False),
])
def test_a_records_success_rule_has_no_other_key_and_one_bound(rule, sound):
    """``rerun`` built ``SuccessRule(**rule)`` from what the record check had let through:
    an extra key or no bound was a TypeError or ValueError traceback."""
    from bench.store import record_problem

    path = sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]
    record = {**json.loads(path.read_text()), "success_rule": rule}
    assert (record_problem(record) is None) == sound


def test_rerun_refuses_a_success_rule_against_its_metrics_direction(tmp_path, capsys):
    [path] = copy_records(ROOT / "results" / "quick", tmp_path, 1)
    edit(path, lambda r: r.update(success_rule={"metric": "psnr", "at_least": None,
                                                "at_most": 20}))
    line = one_line(capsys, "rerun", str(tmp_path), "--sample", "1", "--jobs", "0")
    assert "success_rule" in line and "psnr is higher-is-better" in line


def test_a_text_records_per_sequence_scores_are_numbers():
    """``site`` formatted ``metrics.per_sequence`` as numbers: strings were a ValueError."""
    from bench.store import record_problem

    path = sorted((ROOT / "results" / "text" / "records").glob("*.json"))[0]
    record = json.loads(path.read_text())
    assert record_problem(record) is None
    scores = record["metrics"]["per_sequence"]["rouge1"]
    record["metrics"]["per_sequence"]["rouge1"] = [str(x) for x in scores]
    assert "metrics.per_sequence" in record_problem(record)


def test_an_arrays_file_larger_than_a_cell_writes_is_refused_before_it_is_read(tmp_path):
    """A hand-made .npy header of shape (2, 4000, 3, 512, 512) over a sparse 6 GB file was
    read whole (then converted to float, 25 GB) by ``report`` and ``prior-curve``."""
    import numpy as np

    from bench.pictures import MAX_ARRAY_VALUES, load_cell_arrays

    path = tmp_path / "big.npy"
    shape = (2, 4000, 3, 512, 512)  # 6.3e9 values
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1,), np.uint8))
    header["shape"] = shape
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.truncate(f.tell() + int(np.prod(shape)))  # sparse: no disk, no memory
    with pytest.raises(ValueError, match=f"above the {MAX_ARRAY_VALUES}"):
        load_cell_arrays(path)
    small = tmp_path / "small.npy"
    np.save(small, np.full((2, 1, 1, 4, 4), 255, np.uint8))
    originals, recons = load_cell_arrays(small)
    assert originals.shape == (1, 1, 4, 4) and float(recons.max()) == 1.0


def test_a_results_folder_whose_name_is_not_utf8(tmp_path):
    """``report`` wrote its title with the folder's name and ``site`` made it a page's
    folder and link: a name that is not UTF-8 was a UnicodeEncodeError traceback."""
    import os
    import shutil
    import subprocess
    import sys

    folder = os.fsencode(str(tmp_path)) + b"/bad\xff"
    os.makedirs(folder + b"/records")
    for f in sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[:2]:
        shutil.copy(f, os.fsdecode(folder + b"/records/" + f.name.encode()))

    def cli(*args: bytes) -> subprocess.CompletedProcess:  # bytes out: no decoding here
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        return subprocess.run([sys.executable, "-m", "bench.cli", *args], env=env,
                              capture_output=True, timeout=300)

    report = cli(b"report", folder)
    assert report.returncode == 0, report.stderr
    assert report.stdout.strip() == folder + b"/report.md"  # the name's own bytes
    # titled by its records' suite (the folder's name had been the title)
    assert open(folder + b"/report.md", "rb").read().startswith(b"# leakbench report: quick\n")
    site = cli(b"site", folder, b"--out", os.fsencode(str(tmp_path / "site")))
    assert site.returncode == 2 and b"Traceback" not in site.stderr
    assert b"is not printable UTF-8: rename the folder" in site.stderr


def test_digits_meta_reads_the_grey_images_only():
    """A dry run reads every dataset's meta: for digits it built each size's three-channel
    copy (1.4 GB at 256 px), eight of them cached (74 s and 12.6 GB for a 16-cell suite)."""
    from bench.datasets import digits
    from bench.datasets.common import channel_stats

    digits._digits.cache_clear()
    meta = digits.Digits(size=24, channels=3, normalize=True).meta()
    assert digits._digits.cache_info().currsize == 0  # no image copy for the meta
    data = digits.Digits(size=24, channels=3).load("train").tensors[0]
    assert (meta.mean, meta.std) == channel_stats(data) and meta.pixel_mean == meta.mean


def test_the_architecture_table_counts_a_network_before_it_builds_it():
    """A record's ``input_meta`` of 1×4096×4096 on an mlp made ``leaderboard`` build 2.1
    billion parameters (27 s, 9.2 GB); ``hidden: 512`` would have asked for 34 GB."""
    from attacks.rgap_rank import MAX_RANK_PARAMETERS
    from bench.leaderboard.tables import architecture_table
    from bench.store import load_records

    records = [r for r in load_records(ROOT / "results" / "quick", quarantine=False)
               if r["arch"]["name"] == "mlp"][:1]
    records[0]["input_meta"] = {"shape": [1, 4096, 4096], "num_classes": 10}
    table = architecture_table(records)
    assert table is not None
    assert table.frame["Parameters"].tolist() == ["n/a"]
    assert f"above the {MAX_RANK_PARAMETERS:,} the table builds" in table.frame["Note"][0]


def test_prior_curve_refuses_an_out_it_cannot_write_before_it_samples(tmp_path, capsys,
                                                                      monkeypatch):
    """Only "exists and is not a folder" was checked first: an immutable or read-only --out
    was found after the score model and every sampler had run (65 s at 2 samples)."""
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cache"))
    line = one_line(capsys, "prior-curve", "--out", "/proc/leakbench-cannot-write/sub",
                    "--samples", "2", "--score-steps", "1")
    assert "cannot write there" in line
    assert not (tmp_path / "cache").exists()  # no score model was trained first


def test_a_run_refuses_a_records_folder_it_cannot_write_before_any_cell(tmp_path, capsys,
                                                                        monkeypatch):
    """An immutable ``records/`` was found at the first cell's save: the cells that had
    finished by then were lost, their pictures left without records."""
    import tempfile

    from bench import store

    real = tempfile.mkstemp

    def refuse_records(*args, **kwargs):
        if Path(kwargs.get("dir", "")).name == "records":
            raise PermissionError(1, "Operation not permitted")
        return real(*args, **kwargs)

    monkeypatch.setattr(store.tempfile, "mkstemp", refuse_records)
    out = tmp_path / "o"
    (out / "records").mkdir(parents=True)  # an immutable folder left by an earlier run
    line = one_line(capsys, "run", write_suite(tmp_path), "--out", str(out), "--jobs", "0")
    assert f"{out / 'records'}: cannot write there (Operation not permitted)" in line
    assert not (out / "cells").exists()  # no cell ran


def test_the_writability_probe_creates_no_folder(tmp_path, capsys):
    """A run refused for its data (checked first) leaves no records/ or cells/ behind, and
    the probe of a folder not yet made tries its nearest existing parent."""
    from bench.outputs import writable_problem

    assert writable_problem(tmp_path / "a" / "b") is None and not (tmp_path / "a").exists()
    suite = write_suite(tmp_path, datasets=[{"mnist": {"root": str(tmp_path / "empty")}}])
    (tmp_path / "empty").mkdir()
    one_line(capsys, "run", suite, "--out", str(tmp_path / "o"), "--jobs", "0")
    assert not (tmp_path / "o" / "records").exists() and not (tmp_path / "o" / "cells").exists()


def test_a_text_folder_refuses_a_file_larger_than_its_cap_before_reading_it(tmp_path, capsys):
    """Every ``*.txt`` was read whole: a 3 GB file took 62 s and 7 GB before a dry run."""
    from bench.textcorpus import MAX_TEXT_FILE_BYTES

    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "a.txt").write_text("The quick brown fox jumps over the lazy dog near the bank.")
    with open(folder / "big.txt", "wb") as f:
        f.truncate(MAX_TEXT_FILE_BYTES + 1)  # sparse: no disk
    suite = write_suite(tmp_path, datasets=[{"textfolder": {"root": str(folder)}}],
                        archs=["transformer"], attacks=["tag"])
    line = one_line(capsys, "run", suite, "--out", str(tmp_path / "o"), "--dry-run")
    assert f"big.txt: larger than {MAX_TEXT_FILE_BYTES} bytes" in line


@pytest.mark.parametrize("row, needle", [
    ({"claim": "x", "verdict": "Holds"}, "row 0: expected a claim id and a verdict"),
    ({"claim": {"id": "x"}, "verdict": "holds"}, "row 0: expected a claim id and a verdict"),
    ({"claim": "x", "verdict": ["holds"]}, "row 0: expected a claim id and a verdict"),
])
def test_check_refuses_a_reference_verdict_it_cannot_read(row, needle, tmp_path, capsys):
    """``"verdict": "Holds"`` matched no verdict, so a broken claim passed the gate, exit 0."""
    folder = tmp_path / "dlg"
    copy_records(ROOT / "results" / "paper-dlg", folder, 4)
    reference = tmp_path / "check.json"
    reference.write_text(json.dumps({"suite": "paper-dlg", "rows": [row]}))
    assert needle in one_line(capsys, "check", str(folder), "--against", str(reference))


def test_check_warns_of_reference_claims_and_a_claims_file_of_another_suite(tmp_path, capsys):
    folder = tmp_path / "q"
    copy_records(ROOT / "results" / "quick", folder, 4)
    reference = tmp_path / "check.json"
    reference.write_text(json.dumps({"rows": [{"claim": "no-such-claim", "verdict": "holds"},
                                              {"claim": "dlg-recovers-batch-1",
                                               "verdict": "holds"}]}))
    assert main(["check", str(folder), "--claims", "paper-dlg", "--against",
                 str(reference)]) == 0
    err = capsys.readouterr().err
    assert "paper-dlg.claims.yaml holds the claims of suite paper-dlg; the records are of " \
           "quick" in err
    assert "1 claim(s) of the reference are not checked here: no-such-claim" in err
    # a reference holding none of the claims checked can break none: refused since
    reference.write_text(json.dumps({"rows": [{"claim": "no-such-claim", "verdict": "holds"}]}))
    assert main(["check", str(folder), "--claims", "paper-dlg", "--against",
                 str(reference)]) == 2
    assert "gives a verdict for none of the 11 claim(s)" in capsys.readouterr().err


def test_a_claims_file_naming_no_suite_is_about_the_suites_it_includes(tmp_path, capsys):
    """A file with no ``suite:`` that includes paper-dlg passed the foreign-suite guard: quick's
    check files were rewritten under the file's name with paper-dlg's 11 claims "not run",
    exit 0 (a CLI fuzz). It now warns and leaves them as they are, as paper-dlg itself does."""
    folder = tmp_path / "q"
    copy_records(ROOT / "results" / "quick", folder, 4)
    claims = tmp_path / "mine.yaml"
    claims.write_text("include: [paper-dlg]\n")
    assert main(["check", str(folder), "--claims", str(claims)]) == 0
    assert "mine.yaml holds the claims of suite paper-dlg; the records are of quick; the " \
           "folder's check files are left as they are" in capsys.readouterr().err
    assert not (folder / "check.json").exists()
    # with a claim of its own it is about the records it is given: its files are written
    claims.write_text("include: [paper-dlg]\nclaims:\n- {id: mine, paper: p, sentence: s, "
                      "where: {attack: dlg}, metric: psnr, expect: {at_least: 5}}\n")
    assert main(["check", str(folder), "--claims", str(claims)]) == 0
    assert "holds the claims of suite" not in capsys.readouterr().err
    assert "mine" in (folder / "check.md").read_text()


@pytest.mark.parametrize("command", [["report", str(ROOT / "results" / "quick")],
                                     ["prior-curve", "--attacks", str(ROOT / "results" / "quick")]])
def test_fid_weights_named_by_the_environment_are_checked_as_the_flag_is(command, tmp_path,
                                                                         capsys, monkeypatch):
    """``$LEAKBENCH_FID_WEIGHTS`` naming a file that is not weights made every group n/a,
    exit 0, where ``--fid-weights`` naming it was one line."""
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not weights")
    monkeypatch.setenv("LEAKBENCH_FID_WEIGHTS", str(junk))
    assert one_line(capsys, *command).startswith(
        "leakbench: error: $LEAKBENCH_FID_WEIGHTS: ")


def test_rerun_of_a_folder_where_every_cell_was_skipped_is_one_line(tmp_path, capsys):
    """It printed "Re-ran 0 cells", an empty table and "0/0", exit 0."""
    for path in copy_records(ROOT / "results" / "quick", tmp_path, 3):
        edit(path, lambda r: r.update(status="skipped", skip_reason="a test", metrics={}))
    assert "no image cell ran" in one_line(capsys, "rerun", str(tmp_path), "--jobs", "0")


def test_a_markdown_caption_stays_one_paragraph(capsys):
    """A caption with a blank line ended pandoc's ``Table:`` paragraph mid-caption."""
    assert main(["table", str(ROOT / "results" / "quick"), "--format", "markdown",
                 "--caption", "a\n\n| b"]) == 0
    assert capsys.readouterr().out.endswith("\n\nTable: a | b {#tab:psnr-defense-attack}\n")


def test_wrong_words_a_hunt_found(tmp_path, capsys):
    """Each was one line naming the wrong problem: a table of only skipped cells blamed an
    empty --where; an export of only utility records said there were none; a run into a
    dangling link or a loop of links said "File exists"."""
    skipped = tmp_path / "skipped"
    for path in copy_records(ROOT / "results" / "quick", skipped, 3):
        edit(path, lambda r: r.update(status="skipped", skip_reason="a test", metrics={}))
    assert "no attack cell ran: all 3 record(s) are skipped" in one_line(
        capsys, "table", str(skipped))
    utility = tmp_path / "utility"
    (utility / "records").mkdir(parents=True)
    for f in (ROOT / "results" / "defenses" / "records").glob("*.json"):
        if json.loads(f.read_text()).get("kind") == "utility":
            (utility / "records" / f.name).write_bytes(f.read_bytes())
            break
    assert "only 1 utility record(s)" in one_line(capsys, "export", str(utility))
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    for link in ("dangling", "loop_a"):
        line = one_line(capsys, "run", write_suite(tmp_path), "--out", str(tmp_path / link))
        assert "a symbolic link to " in line and "which is missing or a loop" in line


@pytest.mark.parametrize("part, change", [
    ("attack", {"bogus": 1}), ("arch", {"hidden": -3})])
def test_rerun_refuses_records_whose_components_do_not_validate(part, change, tmp_path,
                                                                  capsys):
    """Each re-run cell ended "error: ParamError", was counted inside the committed
    interval, and the command exited 0."""
    for path in copy_records(ROOT / "results" / "quick", tmp_path, 200):
        edit(path, lambda r: r[part]["params"].update(change))
    line = one_line(capsys, "rerun", str(tmp_path), "--sample", "2", "--jobs", "0")
    assert "does not validate" in line and next(iter(change)) in line


def test_a_blank_cache_variable_means_the_default_cache(monkeypatch, tmp_path):
    """LEAKBENCH_CACHE=" " made a folder named " " in the working directory; the other
    variables read blank as unset."""
    from bench.cache import cache_root

    monkeypatch.delenv("LEAKBENCH_CACHE", raising=False)
    default = cache_root()
    monkeypatch.setenv("LEAKBENCH_CACHE", " ")
    assert cache_root() == default
    monkeypatch.setenv("LEAKBENCH_CACHE", f" {tmp_path} ")
    assert cache_root() == tmp_path


@pytest.mark.parametrize("command, sub", [("export", "records"), ("table", "cells")])
def test_output_into_a_stores_own_folders_is_refused(command, sub, tmp_path, capsys):
    """export --output DIR/records/zz.json wrote a CSV that the next command quarantined as a
    damaged record; the same flag could overwrite a real record."""
    copy_records(ROOT / "results" / "quick", tmp_path, 200)
    (tmp_path / "cells").mkdir()
    target = tmp_path / sub / "zz.json"
    line = one_line(capsys, command, str(tmp_path), "--output", str(target))
    assert f"{sub}/" in line and "--output" in line
    assert not target.exists()


@pytest.mark.parametrize("args, flag", [
    (["run", "smoke", "--verbose", "--no-leaderboard"], "--verbose"),
    (["table", str(ROOT / "results" / "quick"), "--format", "csv", "--label", "x"],
     "--label"),
    (["table", str(ROOT / "results" / "quick"), "--format", "csv", "--caption", "x"],
     "--caption")])
def test_a_flag_the_command_ignores_is_named(args, flag, tmp_path, capsys, monkeypatch):
    """--verbose without --dry-run, a CSV's --label: silently ignored."""
    if args[0] == "run":
        args = [*args, "--out", str(tmp_path / "o"), "--jobs", "0", "--quiet"]
        monkeypatch.setattr("bench.runner.run_suite", lambda *a, **k: None)
    try:
        main(args)
    except AttributeError:  # the stubbed run's summary: the warning came before it
        pass
    err = capsys.readouterr().err
    assert f"{flag}" in err and "ignored" in err, err


def test_output_into_a_folder_named_records_that_is_no_store_is_written(tmp_path, capsys):
    """Only a results store's records/ (it holds record files) is refused."""
    target = tmp_path / "notes" / "records" / "t.md"
    target.parent.mkdir(parents=True)
    assert main(["table", str(ROOT / "results" / "quick"), "--format", "markdown",
                 "--output", str(target)]) == 0
    assert target.stat().st_size > 0
