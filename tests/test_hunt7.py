"""Bad input a seventh hunt found (2026-12-05): a read-only cache, `rerun` without the cache
check a run makes, claims numbers written as YAML 1.1 text. Each is now served, one line
and exit status 2 before any work, or read as a suite reads it."""

from __future__ import annotations

import errno
from contextlib import contextmanager
from pathlib import Path

import pytest

import bench.cache
from bench.cache import cached
from bench.cli import main
from bench.runner import run_suite
from bench.store import load_records
from helpers import ROOT, make_suite, one_line

QUICK = ROOT / "results" / "quick"


@contextmanager
def _read_only(path: Path):
    raise OSError(errno.EROFS, "Read-only file system", str(path.parent))
    yield  # pragma: no cover


def test_a_read_only_cache_builds_what_it_lacks_uncached_with_one_warning(tmp_path, capsys,
                                                                          monkeypatch):
    """A read-only cache (a shared mount) had every trained-victim cell end in an error
    record: ``OSError: [Errno 30] Read-only file system``."""
    monkeypatch.setattr(bench.cache, "build_lock", _read_only)
    monkeypatch.setattr(bench.cache, "_WARNED_UNWRITABLE", set())
    monkeypatch.setattr(bench.cache, "_UNCACHED", {})
    built = []

    def build() -> bytes:
        built.append(1)
        return b"artifact"

    entry = tmp_path / "kind" / "key.bin"
    for _ in range(2):  # a load that keeps its path gets a file that is still there
        path = cached(entry, build, lambda p: p)
        assert path.read_bytes() == b"artifact" and path != entry
    assert len(built) == 1 and not entry.exists()  # built once here, nothing written
    import shutil

    shutil.rmtree(path.parent)  # a cleaner took the private copy: built again, not trusted
    again = cached(entry, build, lambda p: p)
    assert again.read_bytes() == b"artifact" and len(built) == 2
    err = capsys.readouterr().err
    assert err.count("is not writable") == 1 and err.count("\n") == 1
    # a failure of the build itself is the build's, not taken for a read-only cache
    monkeypatch.setattr(bench.cache, "build_lock", lambda p: contextmanager(
        lambda: (yield))())

    def broken() -> bytes:
        raise OSError(errno.EACCES, "Permission denied", "/data/file")

    with pytest.raises(OSError, match="Permission denied"):
        cached(tmp_path / "other.bin", broken, lambda p: p)


def test_a_trained_victim_cell_runs_on_a_read_only_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bench.cache, "build_lock", _read_only)
    monkeypatch.setattr(bench.cache, "_WARNED_UNWRITABLE", set())
    monkeypatch.setattr(bench.cache, "_UNCACHED", {})
    run_suite(make_suite(victim="trained:2"), tmp_path / "out", jobs=0, device="cpu",
              progress=False)
    (record,) = load_records(tmp_path / "out")
    assert record["status"] == "ok", record.get("error")
    assert "is not writable" in capsys.readouterr().err


def test_rerun_refuses_a_cache_that_is_a_file_before_running(tmp_path, capsys, monkeypatch):
    """``run`` refused it in one line; ``rerun`` ran the drawn cells into error rows, exit 0."""
    (tmp_path / "cachefile").write_text("x")
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cachefile"))
    line = one_line(capsys, "rerun", str(QUICK), "--sample", "1", "--jobs", "0")
    assert "exists and is not a folder" in line


def test_claims_read_a_number_written_as_yaml_1_1_text(tmp_path):
    """``at_most: 1e-3`` is text to YAML 1.1: suites read it as 0.001, claims refused it."""
    from bench.claims.schema import load_claims

    path = tmp_path / "c.claims.yaml"
    path.write_text("claims:\n  - id: x\n    paper: p\n    sentence: s\n"
                    "    where: {attack: dlg}\n    metric: mse\n    expect: {at_most: 1e-3}\n")
    (claim,) = load_claims(str(path)).claims
    assert claim.at_most == 0.001
    path.write_text(path.read_text().replace("1e-3", "'a lot'"))
    assert main(["check", str(QUICK), "--claims", str(path)]) == 2


def test_a_resume_with_another_dataset_root_says_the_kept_cells_read_other_folders(
        tmp_path, capsys, monkeypatch):
    """An imagefolder suite whose ``root:`` was edited resumed with "1 already done" and
    nothing else: the root is outside the cell id (it says where files lie), yet for an
    image folder it is the data."""
    from test_datasets_real import write_pngs

    for name, seed in (("A", 0), ("B", 1)):
        write_pngs(tmp_path / name, {"cat": 3, "dog": 3}, side=8, seed=seed)
    suites = [make_suite(datasets=[{"imagefolder": {"root": str(tmp_path / name), "size": 8}}])
              for name in ("A", "B")]
    run_suite(suites[0], tmp_path / "out", jobs=0, device="cpu", progress=False)
    capsys.readouterr()
    again = run_suite(suites[0], tmp_path / "out", jobs=0, device="cpu", progress=False)
    assert again.already_done == 1 and capsys.readouterr().err == ""
    moved = run_suite(suites[1], tmp_path / "out", jobs=0, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert moved.already_done == 1  # kept: a moved folder of the same images is no new data
    assert err.count("\n") == 1 and "1 finished cell(s) read their dataset from another " \
        f"root ({str(tmp_path / 'A')!r}, now {str(tmp_path / 'B')!r})" in err
    assert "--force re-runs them" in err
    monkeypatch.setenv("HOME", str(tmp_path))  # the same folder spelt otherwise: no warning
    spelt = make_suite(datasets=[{"imagefolder": {"root": "~/B", "size": 8}}])
    run_suite(suites[1], tmp_path / "out2", jobs=0, device="cpu", progress=False)
    capsys.readouterr()
    assert run_suite(spelt, tmp_path / "out2", jobs=0, device="cpu",
                     progress=False).already_done == 1
    assert capsys.readouterr().err == ""


def test_a_check_of_other_claims_keeps_the_reference_rows_it_does_not_check(tmp_path, capsys):
    """Checking another suite's claims (or a subset, or a renamed claim) rewrote
    DIR/check.json, the reference of the next check: a claim that then broke went unseen
    (exit 0). Another suite's claims now leave the files alone; a subset or a rename carries
    the held claims it does not check, marked, and the site leaves them out."""
    import json

    from bench.site.claims import read_claims

    out = tmp_path / "out"
    run_suite(make_suite(), out, jobs=0, device="cpu", progress=False)

    def claims(name: str, claim: str, at_least: float) -> str:
        path = tmp_path / f"{name}.claims.yaml"
        path.write_text(f"claims:\n  - id: {claim}\n    paper: p\n    sentence: s\n"
                        "    where: {arch: lenet}\n    metric: psnr\n"
                        f"    expect: {{at_least: {at_least}}}\n")
        return str(path)

    assert main(["check", str(out), "--claims", claims("holds", "c1", 1)]) == 0
    files = {n: (out / n).read_bytes() for n in ("check.md", "check.tex", "check.json")}
    capsys.readouterr()
    assert main(["check", str(out), "--claims", "paper-idlg"]) == 0  # other claims: not run
    assert "the folder's check files are left as they are" in capsys.readouterr().err
    assert {n: (out / n).read_bytes() for n in files} == files
    assert main(["check", str(out), "--claims", claims("other", "c2", 1)]) == 0  # a rename
    assert "keeps 1 claim(s) not checked here (c1) as they were" in capsys.readouterr().err
    rows = json.loads((out / "check.json").read_text())["rows"]
    assert [(r["claim"], r.get("carried")) for r in rows] == [("c2", None), ("c1", True)]
    assert "c1" not in (out / "check.md").read_text()
    assert [r["Claim"] for r in read_claims(out).rows] == ["c2"]  # the site: this check's
    fails = ["check", str(out), "--claims", claims("fails", "c1", 99)]
    assert main(fails) == 1 and main(fails) == 1  # seen, and seen again: the files are kept
    assert main([*fails, "--accept"]) == 1  # written
    capsys.readouterr()
    assert main(["check", str(out), "--claims", claims("other", "c2", 1)]) == 0
    rows = json.loads((out / "check.json").read_text())["rows"]
    assert [r["claim"] for r in rows] == ["c2"]  # c1 no longer holds: nothing to carry
    assert main(["check", str(out), "--claims", claims("c2_fails", "c2", 99)]) == 1


def test_the_site_reads_a_carried_row_that_has_only_a_claim_and_a_verdict(tmp_path) -> None:
    """A reference row needs only its claim and verdict; carried, the site had asked it for
    the shown columns and stopped the site build (a review)."""
    import json

    from bench.site.claims import read_claims

    (tmp_path / "check.json").write_text(json.dumps({"suite": "s", "rows": [
        {"claim": "old", "verdict": "holds", "carried": True}]}))
    assert read_claims(tmp_path).rows == []


@pytest.mark.parametrize("name", ["records/{}.json", "cells/{}.png"])
def test_a_folder_where_a_cell_saves_is_one_line_before_any_cell_runs(name, tmp_path, capsys):
    """``mkdir records/<id>.json``: the run stopped at that cell's save ("Is a directory"),
    its batch-mate's work lost with it."""
    from bench.suite import iter_cells
    from helpers import write_suite

    suite = write_suite(tmp_path / "two.yaml", seeds=2)
    cid = sorted(c.cell_id for c in iter_cells(make_suite(seeds=2)))[1]
    out = tmp_path / "out"
    (out / name.format(cid)).mkdir(parents=True)
    line = one_line(capsys, "run", str(suite), "--out", str(out), "--jobs", "0", "--quiet")
    assert f"{out / name.format(cid)}: a folder stands where cell {cid} saves" in line
    assert [p for p in (out / "records").glob("*.json") if p.is_file()] == []  # none ran


@pytest.mark.parametrize("text", ['{"rows": {}}', '{"rows": {"c1": "holds"}}',
                                  '{"rows": ["holds"]}', '{"rows": [{"claim": "c1"}]}', "[]"])
def test_a_reference_whose_rows_are_no_list_of_rows_is_one_line(text, tmp_path, capsys):
    """``"rows": {}`` was read as an empty reference in silence, and a dict of rows gave
    Python's "TypeError: string indices must be integers"."""
    reference = tmp_path / "ref.json"
    reference.write_text(text)
    line = one_line(capsys, "check", str(ROOT / "results" / "paper-dlg"), "--against",
                    str(reference))
    assert line.endswith('not a check.json (expected "rows": a list of objects with a claim '
                         'and a verdict)') and "TypeError" not in line


@pytest.mark.parametrize("limit", [600.0, 1e-5, 1234567.0, 1000000.5, 3600.0000001, 0.1])
def test_a_timeout_records_its_limit_exactly_enough_to_be_compared(limit):
    """``:g`` kept six digits and the pattern no minus: 1e-05 read as no limit, and 1000000.5
    as less than itself, so each resume re-ran the cell and timed out again (a review)."""
    from bench.executors.base import timed_out_under, timeout_error

    assert timed_out_under(timeout_error(object(), limit)) == limit


def test_a_record_a_newer_leakbench_wrote_is_left_in_place_and_never_written_over(
        tmp_path, capsys):
    """An older leakbench quarantined (moved) a newer one's records as damaged, and a run
    then wrote its own older record over the cell."""
    import json

    run_suite(make_suite(seeds=2), tmp_path, jobs=0, device="cpu", progress=False)
    first, second = sorted((tmp_path / "records").glob("*.json"))
    record = json.loads(first.read_text())
    first.write_text(json.dumps({**record, "record_version": 2}))
    before = first.read_bytes()
    capsys.readouterr()
    assert len(load_records(tmp_path)) == 1  # the newer one is not read
    err = capsys.readouterr().err
    assert "1 record(s) were written by a newer leakbench" in err and "left in place" in err
    assert first.read_bytes() == before and not (tmp_path / "records" / "quarantine").exists()
    with pytest.raises(Exception, match="written by a newer leakbench .e.g. " + first.stem):
        run_suite(make_suite(seeds=2), tmp_path, jobs=0, device="cpu", progress=False)
    assert first.read_bytes() == before


@pytest.mark.parametrize("limit,timeout,shorter", [
    (1234.5644, 1234.5644, False), (600.0, 600.0, False), (1.0000004e-5, 1.0000004e-5, False),
    (1234.5, 1234.5644, True), (5.0, 120.0, True)])
def test_a_timeout_text_of_six_digits_is_read_as_its_own_limit(limit, timeout, shorter):
    """Records before 2026-12-05 kept the limit to ``:g``'s six digits: 1234.5644 s read back
    as 1234.56 s, shorter than itself, so such a cell ran once more on every resume."""
    from bench.executors.base import timed_out_under
    from bench.resume import _shorter

    old_text = f"exceeded the cell timeout of {limit:g}s"
    assert _shorter(timed_out_under(old_text), timeout) is shorter
