"""Merging record stores made on different machines or runs into one (``leakbench merge``).

Stores are read in order: OUT's own records first (a merge never replaces one silently), then
each DIR as given. Copies of a cell agree when their *result* (status and metrics) is the same;
timings and provenance may differ, and so may the metrics' ``*_note`` texts (``lpips_note``
names the machine's weights path). For each cell one copy is kept:

1. the best status: ``ok`` > ``diverged`` > ``error`` = ``timeout`` > ``skipped``;
2. among equals, the first in that order (OUT, then the DIRs as given).

Agreeing copies are duplicates, kept once. Disagreeing ones are a conflict: one line each,
naming the kept and the dropped copies with their status, PSNR and the machine they ran on. The
kept record travels whole (its provenance with it), its artifacts (``picture``, ``arrays``)
with it, written through the store (atomically, artifacts before the record).

An artifact path is written under OUT as the record gives it: a record whose path is not
under ``cells/`` (absolute, climbing out with ``..``, or into ``records/``) is damaged, and
one whose path is not its own ``cells/<cell_id>.png`` or ``.npy`` (another cell's picture,
which it would overwrite) is left out too, each named in one line; a file is copied only
when it lies inside its store (:func:`bench.pictures.locate_artifact`, the
check ``leakbench site`` makes: no link out of the folder). An artifact is copied in chunks,
never read whole, and one larger than ``MAX_ARTIFACT_BYTES`` is left out unread, named in one
line (an 8 GB sparse picture was read whole: a MemoryError). A record a newer leakbench wrote
(a higher ``record_version``) is left out, and where OUT holds one, its cell is not written:
an older copy never replaces it. The merge holds OUT's run lock
(:class:`bench.lock.RunLock`): it never writes into a folder a run is writing.
"""

from __future__ import annotations

import json
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.identity import LABEL_FIELDS
from bench.leaderboard.frames import label_splits
from bench.lock import RunLock
from bench.outputs import store_part_problem
from bench.paths import resolved, store_problem
from bench.perceptual import LPIPS_SCORING
from bench.pictures import MAX_ARRAY_VALUES, locate_artifact, own_artifact
from bench.registry import LeakbenchError
from bench.store import NEWER, RECORDS, read_record, save_outcome

STATUS_RANK = {"ok": 0, "diverged": 1, "error": 2, "timeout": 2, "skipped": 3}
RESULT_FIELDS = ("status", "metrics", "utility")
ARTIFACT_FIELDS = ("picture", "arrays")
RULE = "best status (ok > diverged > error = timeout > skipped), then the first store given"
MAX_ARTIFACT_BYTES = 4 * MAX_ARRAY_VALUES
"""An artifact's size at most (2 GiB): a cell's arrays are at most ``MAX_ARRAY_VALUES`` bytes
(512 MiB) and its picture, a PNG of the same images, about as large; a larger file is none of
a cell's."""


@dataclass
class Copy:
    """One store's record of a cell."""

    source: Path
    order: int
    record: dict[str, Any]

    def rank(self) -> tuple[int, int]:
        return STATUS_RANK.get(self.record.get("status", ""), 9), self.order

    def result(self) -> str:
        """The fields two copies must share to agree; the metrics' notes (a machine's paths)
        and LPIPS's backbone (absent from records written before it was kept) left out."""
        out = {k: self.record.get(k) for k in RESULT_FIELDS}
        if isinstance(out["metrics"], dict):
            out["metrics"] = {k: v for k, v in out["metrics"].items()
                              if not k.endswith("_note") and k != LPIPS_SCORING}
        return json.dumps(out, sort_keys=True)

    def differs(self, other: Copy) -> str:
        """Where ``other``'s result first differs from this copy's: ``status ok ≠ diverged``,
        ``ssim 0.987312 ≠ 0.987305``, ``psnr 23.456789 ≠ 23.45679``; empty where they
        agree."""
        a, b = json.loads(self.result()), json.loads(other.result())
        if a["status"] != b["status"]:
            return f"status {a['status']} ≠ {b['status']}"
        ma, mb = a["metrics"], b["metrics"]
        if isinstance(ma, dict) and isinstance(mb, dict):
            for key in sorted(ma.keys() | mb.keys()):
                x, y = ma.get(key), mb.get(key)
                if x != y and not (x != x and y != y):  # NaN ≠ NaN, yet they agree
                    return f"{key} {_numbers(x, y)}"
        return next((f"{k} differs" for k in RESULT_FIELDS if a[k] != b[k]), "")

    def describe(self) -> str:
        r, prov = self.record, self.record.get("provenance") or {}
        psnr = (r.get("metrics") or {}).get("psnr")
        where = prov.get("device_name") if prov.get("device") == "cuda" else \
            prov.get("cpu_model", prov.get("device_name"))
        if where and prov.get("device") != "cuda" and prov.get("cpu_isa"):
            where = f"{where} {prov['cpu_isa']}"  # kernels differ by ISA on one CPU model
        full = str(prov.get("git_commit") or "")
        commit = full[:7] + ("-dirty" if full.endswith("-dirty") else "")
        parts = [str(r.get("status", "?"))] + ([f"psnr {psnr:.4f}"] if isinstance(
            psnr, (int, float)) else []) + [str(x) for x in (where, commit) if x]  # a
        # hand-edited provenance may hold numbers
        return f"{self.source} ({', '.join(parts)})"


def _dropped(kept: Copy, copy: Copy) -> str:
    """A dropped copy in a conflict line, with where it first differs from the kept one."""
    where = kept.differs(copy)
    return copy.describe() + (f" [{where}]" if where else "")


def _numbers(a: Any, b: Any) -> str:
    """``a ≠ b`` for a conflict line: floats to six significant digits, or as many more as
    tell them apart (another CPU's float32 rounding shows near the seventh); else JSON."""
    if isinstance(a, float) and isinstance(b, float):
        digits = next((d for d in range(6, 18) if f"{a:.{d}g}" != f"{b:.{d}g}"), 17)
        return f"{a:.{digits}g} ≠ {b:.{digits}g}"
    return f"{json.dumps(a)} ≠ {json.dumps(b)}"


@dataclass
class MergeReport:
    out: Path
    stores: int = 0
    cells: int = 0
    written: int = 0  # records added to OUT or replaced there
    duplicates: int = 0  # agreeing copies dropped
    conflicts: list[str] = field(default_factory=list)
    status_conflicts: int = 0  # of the conflicts, those whose copies differ in status
    problems: list[str] = field(default_factory=list)  # damaged records, missing artifacts
    newer_in_out: dict[str, Path] = field(default_factory=dict)  # cell id: OUT's record that
    # a newer leakbench wrote (never written over)

    def summary(self) -> str:
        values = len(self.conflicts) - self.status_conflicts
        which = f"{values} in values only, " if self.conflicts else ""
        return (f"merged {_count(self.stores, 'store')} into {self.out}: "
                f"{_count(self.cells, 'cell')}, {self.written} written, "
                f"{_count(self.duplicates, 'duplicate')}, "
                f"{_count(len(self.conflicts), 'conflict')} ({which}kept: {RULE})")

    def lines(self) -> list[str]:
        return [*self.problems, *self.conflicts, self.summary()]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _read_store(folder: Path, order: int, report: MergeReport) -> list[Copy]:
    """The store's sound records; a damaged one (as every reader judges it:
    :func:`bench.store.read_record`) is named and left out, so it never outranks a sound copy
    in OUT nor replaces it."""
    copies, files = [], 0
    for path in sorted((folder / RECORDS).glob("*.json")):
        if not path.is_file():  # a FIFO would block the read, a folder is no record: every
            continue  # other reader skips them too (bench.store)
        files += 1
        record, problem = read_record(path)
        if record is None and problem.startswith(NEWER):  # sound to that leakbench: not
            report.problems.append(f"record left out: {path} ({problem})")  # "damaged"
            if order == 0 and folder == report.out:
                report.newer_in_out[path.stem] = path
            continue
        if record is None:
            report.problems.append(f"damaged record left out: {path} ({problem})")
            continue
        foreign = next((k for k in ARTIFACT_FIELDS if record.get(k) not in (
            None, own_artifact(record["cell_id"], k))), None)
        if foreign:  # written as OUT/rel: another cell's picture would be overwritten
            report.problems.append(f"record left out: {path} (its {foreign} "
                                   f"{record[foreign]!r} is not its own file "
                                   f"{own_artifact(record['cell_id'], foreign)})")
            continue
        copies.append(Copy(folder, order, record))
    if not files and not (order == 0 and folder == report.out):  # a DIR given by mistake
        report.problems.append(f"{folder}: its {RECORDS}/ holds no record: nothing merged "
                               "from it")  # (an empty run's folder) had passed in silence
    return copies


def _label(record: dict[str, Any]) -> str:
    return " · ".join(str(record[k]) for k in LABEL_FIELDS if record.get(k))


def _artifacts(kept: Copy, agreeing: list[Copy], report: MergeReport, opened: ExitStack,
               keys: tuple[str, ...] = ARTIFACT_FIELDS) -> dict[str, IO[bytes]]:
    """The kept copy's artifact files, open (closed with ``opened``) for the store to copy in
    chunks: from the kept copy's store, else from one of the copies ``agreeing`` with it that
    names the same file (a store that lost a picture had dropped it from the merge although
    another store held it). One found in none, or larger than ``MAX_ARTIFACT_BYTES``, is
    named and left out."""
    files = {}
    for key in keys:
        rel = kept.record.get(key)
        if not isinstance(rel, str):
            continue
        problems = []
        for source in [kept, *(c for c in agreeing if c.record.get(key) == rel)]:
            file, why = _open_artifact(source, rel, opened)
            if file is not None:
                files[rel] = file
                break
            problems.append(why)
        else:
            report.problems.append(problems[0])
    return files


def _open_artifact(copy: Copy, rel: str, opened: ExitStack) -> tuple[IO[bytes] | None, str]:
    """``copy``'s artifact file ``rel``, open; or None and the line saying why not."""
    cid = copy.record["cell_id"]
    path, why = locate_artifact(copy.source, rel)  # a file inside the store, or why not
    try:
        if path is None:
            raise FileNotFoundError(rel)
        file = opened.enter_context(open(path, "rb"))
        size = os.fstat(file.fileno()).st_size
    except OSError as e:
        why = why or f"cannot be read ({e.strerror or e})"
        return None, f"{cid}: {copy.source / rel} {why}; the record is merged without it"
    if size > MAX_ARTIFACT_BYTES:
        return None, (f"{cid}: {copy.source / rel} is {size} bytes, larger than any cell "
                      f"writes ({MAX_ARTIFACT_BYTES} at most); the record is merged without it")
    return file, ""


def _lost_in_out(kept: Copy, agreeing: list[Copy]) -> dict[str, str]:
    """OUT's kept record's artifacts it lacks (null, or its file gone) that one of the copies
    ``agreeing`` with it holds: field → that copy's path (a merge that had lost a picture
    could never get it back: OUT's copy always won and was never written again)."""
    lost = {}
    for key in ARTIFACT_FIELDS:
        rel = kept.record.get(key)
        if isinstance(rel, str) and locate_artifact(kept.source, rel)[0] is not None:
            continue
        for c in agreeing:
            theirs = c.record.get(key)
            if isinstance(theirs, str) and (rel is None or theirs == rel):
                lost[key] = theirs
                break
    return lost


def merge_stores(out: Path, dirs: list[Path]) -> MergeReport:
    """Merge the record stores ``dirs`` into ``out`` (see the module docstring's rule)."""
    out = Path(out)
    out_real = resolved(out, "merge: ")
    stores = [out] if (out / RECORDS).is_dir() else []
    seen = {resolved(s, "merge: ") for s in stores}
    for d in map(Path, dirs):
        if not d.is_dir():
            raise LeakbenchError(f"merge: {store_problem(d)}")
        if not (d / RECORDS).is_dir():
            raise LeakbenchError(f"merge: {d} holds no record store ({d / RECORDS} is missing)")
        real = resolved(d, "merge: ")
        if real not in seen:
            stores.append(d)
            seen.add(real)
        if out_real != real and out_real.is_relative_to(real):
            raise LeakbenchError(f"merge: OUT {out} lies inside the store {d}: it would become "
                                 "part of what it merges (a store nested in its records); "
                                 "choose a folder outside it")
    problem = store_part_problem(out, f"merge: OUT {out}")  # another store's records/
    if problem:
        raise LeakbenchError(problem)
    # no run writes into OUT meanwhile, nor another merge
    with RunLock(out, elsewhere="merge into another OUT"):
        return _merge_locked(out, stores)


def _merge_locked(out: Path, stores: list[Path]) -> MergeReport:
    report = MergeReport(out, stores=len(stores))
    by_cell: dict[str, list[Copy]] = {}
    for order, folder in enumerate(stores):
        for copy in _read_store(folder, order, report):
            by_cell.setdefault(copy.record["cell_id"], []).append(copy)
    report.cells = len(by_cell)
    kept_records = []
    for cid in sorted(by_cell):
        copies = sorted(by_cell[cid], key=Copy.rank)
        kept = copies[0]
        kept_records.append(kept.record)
        agreeing = [c for c in copies[1:] if c.result() == kept.result()]  # may lend files
        if len(agreeing) < len(copies) - 1:
            dropped = "; ".join(_dropped(kept, c) for c in copies[1:])
            report.conflicts.append(f"conflict {cid} {_label(kept.record)}: kept "
                                    f"{kept.describe()} over {dropped}")
            report.status_conflicts += len({c.record.get("status") for c in copies}) > 1
        else:
            report.duplicates += len(copies) - 1
        if cid in report.newer_in_out:  # an older record would replace a newer one
            report.problems.append(f"{cid}: not written: OUT's record "
                                   f"{report.newer_in_out[cid]} was {NEWER}")
        elif kept.source.resolve() != out.resolve():
            _write_kept(out, kept, agreeing, report)
        elif lost := _lost_in_out(kept, agreeing):  # OUT's copy lost an artifact a DIR holds
            restored = Copy(kept.source, kept.order, {**kept.record, **lost})
            _write_kept(out, restored, agreeing, report, tuple(lost))
    report.problems += label_splits(kept_records)  # what OUT's tables will read
    return report


def _write_kept(out: Path, kept: Copy, agreeing: list[Copy], report: MergeReport,
                keys: tuple[str, ...] = ARTIFACT_FIELDS) -> None:
    """Write ``kept`` with the artifacts ``keys`` found for it (in its store or an agreeing
    copy's) into OUT; OUT's own intact artifacts are not among ``keys``."""
    with ExitStack() as opened:
        files = _artifacts(kept, agreeing, report, opened, keys)
        left_out = {k: None for k in keys  # never a link to a missing file
                    if isinstance(kept.record.get(k), str) and kept.record[k] not in files}
        save_outcome(out, {**kept.record, **left_out}, files)
    report.written += 1
