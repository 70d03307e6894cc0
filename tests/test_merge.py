"""``leakbench merge``: stores from two machines into one, duplicates once, conflicts reported
and decided by the documented rule (best status, then the first store given)."""

from __future__ import annotations

import json
import shutil

import pytest

from bench.cli import main
from bench.lock import RunLock
from bench.merge import RULE
from bench.runner import run_suite
from bench.store import load_records, record_path, save_record
from helpers import make_suite

WARNING = "leakbench: warning: "


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two finished cells (inline run)."""
    out = tmp_path_factory.mktemp("store")
    run_suite(make_suite(seeds=2), out, jobs=0, device="cpu", progress=False)
    return out


def _copy(store, dest, edit=None, exist_ok=False):
    """A copy of ``store`` as another machine would leave it: ``edit(record)`` changes the
    first cell's record."""
    shutil.copytree(store, dest, dirs_exist_ok=exist_ok)
    first = sorted((dest / "records").glob("*.json"))[0]
    if edit:
        record = json.loads(first.read_text())
        edit(record)
        save_record(dest, record)
    return dest, first.stem


def _other_machine(record):
    record["metrics"]["psnr"] += 0.5
    record["provenance"]["cpu_model"] = "Another CPU"


def test_merge_keeps_duplicates_once_and_reports_the_conflict(store, tmp_path, capsys):
    a, _ = _copy(store, tmp_path / "a")
    b, conflicted = _copy(store, tmp_path / "b", _other_machine)
    out = tmp_path / "out"
    assert main(["merge", str(out), str(a), str(b)]) == 0
    lines = capsys.readouterr().out.splitlines()
    (conflict,) = [line for line in lines if line.startswith("conflict")]
    assert conflict.startswith(f"conflict {conflicted}") and "Another CPU" in conflict
    assert conflict.index(str(a)) < conflict.index(str(b))  # kept: the first store given
    psnr = json.loads(record_path(a, conflicted).read_text())["metrics"]["psnr"]
    # what differs, to six digits: a rounding difference the tables hide still shows
    assert conflict.endswith(f"[psnr {psnr:.6g} ≠ {psnr + 0.5:.6g}]")
    assert lines[-1].endswith(f"2 cells, 2 written, 1 duplicate, 1 conflict (1 in values "
                              f"only, kept: {RULE})")
    merged = {r["cell_id"]: r for r in load_records(out)}
    original = {r["cell_id"]: r for r in load_records(a)}
    assert merged == original  # a's copies, provenance and all
    for r in merged.values():  # artifacts travel with the record
        assert (out / r["picture"]).read_bytes() == (a / r["picture"]).read_bytes()
        assert (out / r["arrays"]).is_file()


def test_a_conflict_of_rounding_shows_the_digits_that_differ():
    """Another CPU's float32 rounding differs near the seventh digit: six digits printed
    the two values alike (a review)."""
    from bench.merge import _numbers

    assert _numbers(23.45678901, 23.45679012) == "23.456789 ≠ 23.45679"
    assert _numbers(0.987312, 0.987305) == "0.987312 ≠ 0.987305"
    assert _numbers(None, 2.0) == "null ≠ 2.0"


def test_a_conflict_names_the_metric_that_differs_past_two_nans(tmp_path):
    """NaN ≠ NaN: the line would say ``lpips nan ≠ nan`` and hide the PSNR that differed."""
    from bench.merge import Copy

    def copy(psnr: float) -> Copy:
        return Copy(tmp_path, 0, {"status": "ok", "metrics": {"lpips": float("nan"),
                                                             "psnr": psnr}})

    assert copy(20.0).differs(copy(21.0)) == "psnr 20 ≠ 21"
    assert copy(20.0).differs(copy(20.0)) == ""


def test_a_better_status_wins_whatever_the_order(store, tmp_path, capsys):
    def timed_out(record):
        record.update(status="timeout", metrics=None, error="exceeded the cell timeout")

    a, cid = _copy(store, tmp_path / "a", timed_out)
    b, _ = _copy(store, tmp_path / "b")
    out = tmp_path / "out"
    assert main(["merge", str(out), str(a), str(b)]) == 0
    assert json.loads(record_path(out, cid).read_text())["status"] == "ok"
    lines = capsys.readouterr().out.splitlines()
    (conflict,) = [x for x in lines if x.startswith("conflict")]
    assert f"kept {b} (ok" in conflict and f"over {a} (timeout" in conflict
    assert conflict.endswith("[status ok ≠ timeout]")
    assert "1 conflict (0 in values only, kept:" in lines[-1]


def test_out_records_are_never_replaced_silently(store, tmp_path, capsys):
    out, cid = _copy(store, tmp_path / "out")
    b, _ = _copy(store, tmp_path / "b", _other_machine)
    before = record_path(out, cid).read_text()
    assert main(["merge", str(out), str(b)]) == 0
    text = capsys.readouterr().out
    assert f"conflict {cid}" in text and f"kept {out} (ok" in text
    assert record_path(out, cid).read_text() == before  # OUT came first: its copy stays
    assert main(["merge", str(out), str(b)]) == 0  # merging again changes nothing
    assert "0 written" in capsys.readouterr().out


def test_merging_a_folder_without_records_is_an_error(tmp_path, capsys):
    assert main(["merge", str(tmp_path / "out"), str(tmp_path)]) == 2
    assert "holds no record store" in capsys.readouterr().err


def test_an_out_inside_a_merged_store_is_refused(store, tmp_path, capsys):
    """merge W/records W wrote a second store inside W's records/."""
    import shutil

    w = tmp_path / "w"
    shutil.copytree(store, w)
    before = sorted(p.relative_to(w) for p in w.rglob("*"))
    for out in (w / "records", w / "merged"):
        assert main(["merge", str(out), str(w)]) == 2
        assert "lies inside the store" in capsys.readouterr().err
    assert sorted(p.relative_to(w) for p in w.rglob("*")) == before
    assert main(["merge", str(w), str(w)]) == 0  # into itself: nothing to do, no nesting
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # resolve() raised RuntimeError
    assert main(["merge", str(tmp_path / "loop" / "out"), str(w)]) == 2
    assert "cannot follow its links" in capsys.readouterr().err


def test_damaged_records_are_left_out_never_crash_nor_replace_a_sound_one(store, tmp_path,
                                                                          capsys):
    """A record file that is not an object (a traceback before), or one outside the schema
    with a better status, is named and left out: OUT's sound copy stays."""
    def timed_out(record):
        record.update(status="timeout", metrics=None, error="exceeded the cell timeout")

    out, cid = _copy(store, tmp_path / "out", timed_out)
    before = record_path(out, cid).read_text()
    b, _ = _copy(store, tmp_path / "b")
    damaged = json.loads(record_path(b, cid).read_text())
    damaged["batch_size"] = 0  # status ok, but outside the schema
    record_path(b, cid).write_text(json.dumps(damaged))
    other = sorted((b / "records").glob("*.json"))[1]
    other.write_text("[]")
    assert main(["merge", str(out), str(b)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    left_out = [x.removeprefix(WARNING) for x in captured.err.splitlines()
                if x.startswith(WARNING + "damaged record left out")]
    assert len(left_out) == 2
    assert any(str(other) in x and "not a JSON object" in x for x in left_out)
    assert any(cid in x and "batch_size" in x for x in left_out)
    assert record_path(out, cid).read_text() == before
    assert lines[-1].startswith(f"merged 2 stores into {out}: 2 cells, 0 written")


@pytest.mark.parametrize("rel", ["../payload.sh", "ABSOLUTE", "cells/../../b/cells/x.png",
                                 "records/OTHER.json"])
def test_an_artifact_path_out_of_the_folder_leaves_its_record_out(rel, store, tmp_path,
                                                                  capsys):
    """A record's ``picture`` is written under OUT as given: ``../payload.sh`` wrote a file
    next to OUT, and a picture at another cell's record path overwrote that record after the
    merge had said it kept it (a bad-input hunt). A path not under ``cells/`` is a damaged
    record, left out (one line); even one that resolves inside its own store but climbs out
    of OUT."""
    b = tmp_path / "b"
    payload = tmp_path / "payload.sh"
    payload.write_text("echo owned\n")
    rel = str(payload) if rel == "ABSOLUTE" else rel
    (b / "cells").mkdir(parents=True)
    (b / "cells" / "x.png").write_bytes(b"png")
    _, cid = _copy(store, b, lambda r: r.update(picture=rel), exist_ok=True)
    out = tmp_path / "deep" / "out"
    assert main(["merge", str(out), str(b)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    left = [x.removeprefix(WARNING) for x in captured.err.splitlines()]
    assert left == [f"damaged record left out: {record_path(b, cid)} (field 'picture' is not "
                    "a file name under cells/)"]
    assert lines[-1].startswith(f"merged 1 store into {out}: 1 cell, 1 written")
    assert not record_path(out, cid).exists()
    assert sorted(p.name for p in (tmp_path / "deep").iterdir()) == ["out"]
    assert payload.read_text() == "echo owned\n"


def test_a_record_naming_another_cells_picture_is_left_out(store, tmp_path, capsys):
    """Its picture was written as OUT/cells/<other>.png over the other cell's (a review)."""
    ids = sorted(p.stem for p in (store / "records").glob("*.json"))
    other = f"cells/{ids[1]}.png"
    out = tmp_path / "out"
    shutil.copytree(store, out)
    before = (out / other).read_bytes()
    b, cid = _copy(store, tmp_path / "b", lambda r: r.update(picture=other))
    (b / "records" / f"{ids[1]}.json").unlink()
    (b / other).write_bytes(b"not the other cell's picture")
    (out / "records" / f"{cid}.json").unlink()
    assert main(["merge", str(out), str(b)]) == 0
    left = [x.removeprefix(WARNING) for x in capsys.readouterr().err.splitlines()]
    assert left == [f"record left out: {record_path(b, cid)} (its picture {other!r} is not "
                    f"its own file cells/{cid}.png)"]
    assert (out / other).read_bytes() == before and not record_path(out, cid).exists()


def test_an_artifact_behind_a_link_out_of_the_store_is_not_copied(store, tmp_path, capsys):
    """``cells`` a link to a folder outside the store: the picture is not read through it
    (the site's check), the record is merged without it."""
    b, cid = _copy(store, tmp_path / "b")
    outside = tmp_path / "elsewhere"
    shutil.move(b / "cells", outside)
    (b / "cells").symlink_to(outside)
    out = tmp_path / "out"
    assert main(["merge", str(out), str(b)]) == 0
    captured = capsys.readouterr()
    picture = b / json.loads(record_path(b, cid).read_text())["picture"]
    named = [x for x in captured.err.splitlines() if str(picture) in x]
    assert named == [f"{WARNING}{cid}: {picture} is outside {b}; the record is merged without "
                     "it"]  # one line per artifact (it had been named twice)
    assert record_path(out, cid).exists() and not (out / "cells").exists()
    # and says so: its picture field had still named cells/CID.png, which the leaderboard
    # showed as a broken image
    merged = json.loads(record_path(out, cid).read_text())
    assert merged["picture"] is None and "picture" in json.loads(record_path(b, cid).read_text())
    assert main(["leaderboard", str(out)]) == 0
    assert f"cells/{cid}.png" not in (out / "leaderboard.md").read_text()


def test_notes_naming_a_machine_s_files_are_no_conflict(store, tmp_path, capsys):
    """``lpips_note`` holds the machine's torch-hub path: two machines' identical results
    differed only there, and were reported as a conflict."""
    def other_home(record):
        record["metrics"]["lpips_note"] = "LPIPS n/a: put alexnet.pth in /home/other/.cache"

    a, _ = _copy(store, tmp_path / "a")
    b, _ = _copy(store, tmp_path / "b", other_home)
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "conflict" not in out.replace("0 conflicts", "")
    assert "2 duplicates, 0 conflicts" in out


def test_merge_waits_for_no_run_it_refuses_a_locked_out(store, tmp_path, capsys):
    """OUT held by a live run: the merge is refused before it writes anything."""
    b, _ = _copy(store, tmp_path / "b")
    out = tmp_path / "out"
    with RunLock(out):
        assert main(["merge", str(out), str(b)]) == 2
    err = capsys.readouterr().err
    assert "in use by a running leakbench" in err and "merge into another OUT" in err
    assert "--out" not in err  # merge has no --out option
    assert not (out / "records").exists()
    assert main(["merge", str(out), str(b)]) == 0  # released: it merges
    assert len(load_records(out)) == 2


def test_a_non_finite_number_is_a_damaged_record_not_a_half_merge(store, tmp_path, capsys):
    """NaN in a record's timing parsed (JSON readers accept it) and crashed the writer
    (``allow_nan=False``) after earlier cells were written: OUT half-merged. Now the record
    is left out as damaged, before anything is written."""
    b, _ = _copy(store, tmp_path / "b")
    last = sorted((b / "records").glob("*.json"))[-1]
    last.write_text(last.read_text().replace('"attack_seconds": ', '"attack_seconds": NaN, '
                                             '"was": ', 1))
    out = tmp_path / "out"
    assert main(["merge", str(out), str(b)]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert captured.err.splitlines() == [
        f"{WARNING}damaged record left out: {last} (timing.attack_seconds is not a finite number "
        "(NaN or infinity))"]
    assert lines[-1].startswith(f"merged 1 store into {out}: 1 cell, 1 written")


def test_a_conflict_whose_provenance_holds_a_number_is_described(store, tmp_path, capsys):
    """A hand-edited ``cpu_model: 123`` made the conflict line a TypeError traceback."""
    def numbered(record):
        record["metrics"]["psnr"] += 0.5
        record["provenance"]["cpu_model"] = 123

    a, _ = _copy(store, tmp_path / "a")
    b, conflicted = _copy(store, tmp_path / "b", numbered)
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 0
    (conflict,) = [line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("conflict")]
    assert conflict.startswith(f"conflict {conflicted}") and "123" in conflict


def test_a_conflict_names_each_copys_instruction_set(store, tmp_path, capsys):
    """Two copies from one CPU model with other vector units (AVX-512, AVX2) differ by
    their kernels: the conflict line says so, where it had read "AMD EPYC" twice."""
    def isa(value):
        def edit(record):
            record["metrics"]["psnr"] += 0.5 if value == "AVX2" else 0.0
            record["provenance"].update(cpu_model="AMD EPYC", cpu_isa=value, device="cpu")
        return edit

    a, _ = _copy(store, tmp_path / "a", isa("AVX512"))
    b, _ = _copy(store, tmp_path / "b", isa("AVX2"))
    assert main(["merge", str(tmp_path / "out"), str(a), str(b)]) == 0
    (conflict,) = [line for line in capsys.readouterr().out.splitlines()
                   if line.startswith("conflict")]
    assert "AMD EPYC AVX512" in conflict and "AMD EPYC AVX2" in conflict


def test_a_fifo_or_a_folder_named_like_a_record_is_skipped(store, tmp_path, capsys):
    """A FIFO at records/x.json blocked merge's read forever (every other reader skips what
    is not a regular file), and a folder there refused the whole store with advice about
    permissions; both are left out, as the leaderboard leaves them."""
    import os
    import subprocess
    import sys

    a, _ = _copy(store, tmp_path / "a")
    os.mkfifo(a / "records" / "zzzz.json")
    (a / "records" / "yyyy.json").mkdir()
    out = tmp_path / "out"
    code = "import sys; from bench.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "merge", str(out), str(a)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(load_records(out)) == 2


def test_a_newer_leakbenchs_record_is_neither_called_damaged_nor_written_over(store, tmp_path,
                                                                            capsys):
    """A record of a newer schema was reported as "damaged", and where OUT held it, the
    source's older copy of the cell replaced it: the newer leakbench's result was lost."""
    out, cid = _copy(store, tmp_path / "out")
    newer = json.loads(record_path(out, cid).read_text())
    record_path(out, cid).write_text(json.dumps({**newer, "record_version": 2}))
    before = record_path(out, cid).read_bytes()
    b, _ = _copy(store, tmp_path / "b")
    c, _ = _copy(store, tmp_path / "c")
    ids = sorted(p.stem for p in (c / "records").glob("*.json"))
    in_c = record_path(c, ids[1])
    in_c.write_text(json.dumps({**json.loads(in_c.read_text()), "record_version": 3}))
    assert main(["merge", str(out), str(b), str(c)]) == 0
    captured = capsys.readouterr()
    err = [x.removeprefix(WARNING) for x in captured.err.splitlines()]
    assert not [x for x in err if "damaged" in x]
    assert f"record left out: {record_path(out, cid)} (written by a newer leakbench " \
           "(record_version 2; this one reads 1 to 1))" in err
    assert any(x.startswith(f"record left out: {in_c} (written by a newer leakbench") for x in err)
    assert f"{cid}: not written: OUT's record {record_path(out, cid)} was written by a newer " \
           "leakbench" in err
    assert record_path(out, cid).read_bytes() == before


def test_an_artifact_lost_in_one_store_is_taken_from_an_agreeing_copy(store, tmp_path,
                                                                     capsys):
    """A2 lost a picture that A, whose copy agrees, holds: the merge had written the record
    without it (A2's copy kept, as given first), and a later merge of A could never bring it
    back (OUT's copy always wins). Now the picture comes from the agreeing copy, then, in
    the second merge, into OUT's record that lacks it (a store-integrity hunt)."""
    a, cid = _copy(store, tmp_path / "a")
    a2, _ = _copy(store, tmp_path / "a2")
    picture = json.loads(record_path(a, cid).read_text())["picture"]
    (a2 / picture).unlink()
    out = tmp_path / "out"
    assert main(["merge", str(out), str(a2), str(a)]) == 0
    assert "merged without it" not in capsys.readouterr().err
    assert (out / picture).read_bytes() == (a / picture).read_bytes()
    assert json.loads(record_path(out, cid).read_text())["picture"] == picture

    lost = tmp_path / "lost"
    assert main(["merge", str(lost), str(a2)]) == 0  # a2 alone: merged without it
    assert json.loads(record_path(lost, cid).read_text())["picture"] is None
    capsys.readouterr()
    assert main(["merge", str(lost), str(a)]) == 0
    assert "2 cells, 1 written, 2 duplicates" in capsys.readouterr().out
    assert json.loads(record_path(lost, cid).read_text())["picture"] == picture
    assert (lost / picture).read_bytes() == (a / picture).read_bytes()
    assert main(["merge", str(lost), str(a)]) == 0  # nothing lost now: nothing written
    assert "0 written" in capsys.readouterr().out
