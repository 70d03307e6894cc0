"""Bad input a sixth hunt found (2026-12-05): loops of symbolic links (Python 3.11's
``resolve()`` raises RuntimeError, not OSError), links that lead nowhere, a store's own
folders given as output, and records or suites that were read in silence the wrong way. Each
is now one line and exit status 2 before any work, a warning, or a quarantined record."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from helpers import ROOT, TINY_SUITE, one_line

QUICK = ROOT / "results" / "quick"


def _store(tmp_path: Path, n: int = 2) -> Path:
    """A results folder of the first ``n`` committed quick records, with their files."""
    store = tmp_path / "store"
    (store / "records").mkdir(parents=True)
    (store / "cells").mkdir()
    for path in sorted((QUICK / "records").glob("*.json"))[:n]:
        shutil.copy(path, store / "records")
        for rel in (json.loads(path.read_text()).get(k) for k in ("picture", "arrays")):
            if rel:
                shutil.copy(QUICK / rel, store / rel)
    return store


def _loop(tmp_path: Path) -> Path:
    a, b = tmp_path / "l1", tmp_path / "l2"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


def test_a_cells_file_that_is_a_loop_of_links_is_left_out_with_a_warning(tmp_path, capsys):
    """merge, site and report had ended in a traceback (merge with 2 of 12 records written)."""
    store = _store(tmp_path)
    record = json.loads(sorted((store / "records").glob("*.json"))[0].read_text())
    arrays = store / record["arrays"]
    arrays.unlink()
    arrays.symlink_to(_loop(tmp_path))
    assert main(["merge", str(tmp_path / "merged"), str(store)]) == 0
    assert len(list((tmp_path / "merged" / "records").glob("*.json"))) == 2
    named = [x for x in capsys.readouterr().err.splitlines() if record["arrays"] in x]
    assert len(named) == 1 and "cannot be followed" in named[0]  # once, not twice
    assert named[0].endswith("the record is merged without it")
    assert main(["site", str(store), "--out", str(tmp_path / "site")]) == 0
    assert main(["report", str(store)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "cannot be followed" in err and "not shown" in err


def test_a_results_folder_or_site_out_through_a_loop_is_one_line(tmp_path, capsys):
    loop = _loop(tmp_path)
    assert "cannot follow its links" in one_line(capsys, "site", str(loop), "--out",
                                                  str(tmp_path / "x"))
    line = one_line(capsys, "site", str(_store(tmp_path)), "--out", str(loop / "site"))
    assert "--out" in line and "cannot follow its links" in line


def test_an_output_under_a_link_to_nowhere_is_refused_before_any_work(tmp_path, capsys):
    """prior-curve sampled every configuration (88 s at its least), then failed to write."""
    from bench.outputs import writable_problem

    loop = _loop(tmp_path)
    assert "a link that leads nowhere" in writable_problem(loop / "pc")
    line = one_line(capsys, "prior-curve", "--out", str(loop / "pc"), "--samples", "2",
                    "--score-steps", "1")
    assert "a link that leads nowhere" in line


@pytest.mark.parametrize("kind", ["loop", "dangling"])
def test_a_cache_that_is_a_link_to_nowhere_is_refused_before_a_run(tmp_path, monkeypatch,
                                                                   kind):
    """Every trained-victim cell had become an error record, in a run that exited 0."""
    from bench.cache import cache_problem

    if kind == "loop":
        target = _loop(tmp_path)
    else:
        target = tmp_path / "dangling"
        target.symlink_to(tmp_path / "nowhere" / "deeper")
    monkeypatch.setenv("LEAKBENCH_CACHE", str(target))
    assert "is a link that leads nowhere" in cache_problem()
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "fresh" / "cache"))
    assert cache_problem() is None  # a folder not made yet is fine


def test_a_stores_own_folders_are_no_output(tmp_path, capsys):
    """run --out STORE/records and merge into STORE/cells (of a store not merged) nested a
    store inside a store."""
    store = _store(tmp_path)
    other = shutil.copytree(store, tmp_path / "other")
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    for args in (("run", str(suite), "--out", str(store / "records"), "--jobs", "0"),
                 ("merge", str(store / "cells"), str(other))):
        assert "inside a results folder's" in one_line(capsys, *args)
    assert not (store / "records" / "records").exists()


def test_a_copy_of_a_record_under_another_id_is_named(tmp_path, capsys):
    from bench.store import load_records

    store = _store(tmp_path, 1)
    (path,) = (store / "records").glob("*.json")
    record = json.loads(path.read_text())
    record["cell_id"] = "ffff000000000001"
    (store / "records" / "ffff000000000001.json").write_text(json.dumps(record))
    assert len(load_records(store)) == 2
    err = capsys.readouterr().err
    assert f"ffff000000000001 repeats {path.stem}" in err and "counts both" in err


def test_record_text_that_tables_print_holds_no_control_character(tmp_path, capsys):
    """A newline in a device name began a markdown heading inside leaderboard.md."""
    from bench.store import load_records

    store = _store(tmp_path, 2)
    first, second = sorted((store / "records").glob("*.json"))
    for path, edit in ((first, ("provenance", "device_name", "GPU\n# injected")),
                       (second, (None, "attack_label", "dlg\tx"))):
        record = json.loads(path.read_text())
        (record[edit[0]] if edit[0] else record)[edit[1]] = edit[2]
        path.write_text(json.dumps(record))
    assert load_records(store) == []
    assert capsys.readouterr().err.count("holds a control character") == 2


def test_a_record_with_a_repeated_key_is_damaged(tmp_path, capsys):
    """JSON readers keep the last copy: an appended "status" changed a record in silence."""
    from bench.store import load_records

    store = _store(tmp_path, 1)
    (path,) = (store / "records").glob("*.json")
    text = path.read_text().rstrip()
    path.write_text(text[:-1].rstrip() + ', "status": "error"}')
    assert load_records(store) == []
    assert "key 'status' appears twice" in capsys.readouterr().err


def test_a_blank_perceptual_is_refused_and_none_links_collapse():
    from bench.suite import parse_suite
    from bench.suite.schema import SuiteError

    with pytest.raises(SuiteError, match="perceptual: null would keep LPIPS on"):
        parse_suite({**TINY_SUITE, "perceptual": None})
    suite = parse_suite({**TINY_SUITE, "defenses": [
        "none", {"chain": ["none", "none"]}, {"chain": [{"noise": {"scale": 0.1}}, "none"]},
        {"noise": {"scale": 0.1}}]})
    assert [tuple(s.name for s in chain) for chain in suite.defenses] == [("none",),
                                                                         ("noise",)]


def test_claims_refuse_a_share_past_one_and_a_description_that_is_no_text(tmp_path):
    from bench.claims.schema import ClaimsError, load_claims

    claim = {"id": "x", "paper": "p", "sentence": "s", "where": {"attack": "dlg"},
             "metric": "success", "expect": {"at_least": 2}}
    path = tmp_path / "c.claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    with pytest.raises(ClaimsError, match="a share of successes lies between 0 and 1, got 2"):
        load_claims(str(path))
    path.write_text(yaml.safe_dump({"description": {"a": 1},
                                    "claims": [{**claim, "expect": {"at_least": 0.5}}]}))
    with pytest.raises(ClaimsError, match="description: expected text"):
        load_claims(str(path))


def test_empty_names_are_refused_not_read_as_the_working_folder(tmp_path, capsys):
    assert "run: SUITE: expected a path, got ''" in one_line(capsys, "run", "", "--dry-run")
    assert "--claims: expected a path" in one_line(capsys, "check", str(QUICK), "--claims", "")
    assert "--value: unknown metric ''" in one_line(capsys, "table", str(QUICK), "--value", "")


def test_resuming_with_other_kernels_says_the_leaderboard_mixes_them(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": 2}))
    out = tmp_path / "o"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--quiet",
                 "--no-leaderboard"]) == 0
    os.remove(sorted((out / "records").glob("*.json"))[0])
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--quiet",
                 "--no-leaderboard", "--cpu-conv", "native"]) == 0
    err = capsys.readouterr().err
    assert "finished cells ran otherwise (1 on cpu with --cpu-conv onednn) than this run's, " \
        "on cpu with --cpu-conv native" in err


def test_an_interrupted_forced_run_does_not_promise_a_resume(tmp_path, capsys, monkeypatch):
    """A re-run keeps the old records of the cells a --force run had not reached."""
    import bench.runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.runner, "run_suite", interrupted)
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    for flags, words in (([], "re-run to resume"),
                         (["--force"], "the cells not reached keep their old records")):
        assert main(["run", str(suite), "--out", str(tmp_path / "o"), *flags]) == 130
        assert words in capsys.readouterr().err



def test_an_interrupted_reading_command_promises_no_cells(tmp_path, capsys, monkeypatch):
    """Ctrl-C in `leakbench table` had said "finished cells are kept, re-run to resume"."""
    import bench.cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench.cli, "cmd_table", interrupted)  # the parser is built in main
    assert main(["table", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "leakbench: interrupted\n"


def test_review_a_records_named_folder_a_utility_record_and_a_control_character(tmp_path):
    """From the review of the fixes above: a results folder named ``records`` holding
    check.json is no store part; a utility record uses no attack kernels, so it cannot have
    run "otherwise"; a control character in a parameter is refused at load, not written into
    labels the next load would quarantine."""
    from bench.outputs import store_part_problem
    from bench.resume import _settings
    from bench.suite import parse_suite
    from bench.suite.schema import SuiteError

    folder = tmp_path / "records"
    (folder / "records").mkdir(parents=True)
    (folder / "check.json").write_text("{}")
    assert store_part_problem(folder, "--out") is None
    (folder / "0123456789abcdef.json").write_text("{}")  # now it is a store's records/
    assert store_part_problem(folder, "--out") is not None
    assert _settings({"kind": "utility", "provenance": {"device": "cpu"}}) is None
    assert _settings({"provenance": {"device": "cpu"}}) == ("cpu", "onednn")
    assert _settings({"provenance": {"device": "cuda:0", "cpu_conv": "native"}}) == ("cuda", "")
    with pytest.raises(SuiteError, match="holds a control character"):
        parse_suite({**TINY_SUITE, "datasets": [{"imagefolder": {"folder": "a\tb"}}]})
