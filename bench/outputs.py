"""Files and folders a command writes where the user said: checked before the work that
would be lost at the first write, and written as a shell's redirection would."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from bench.paths import leads_nowhere, missing_link_target
from bench.registry import LeakbenchError
from bench.store import PICTURES, RECORDS, write_atomic

_RECORD_FILE = re.compile(r"(u[0-9a-f]{15}|[0-9a-f]{16})\.json")  # a cell id (utility: u…)


def writable_problem(folder: Path) -> str | None:
    """Why no file can be created in ``folder``, or None, tried in it or, while it does not
    exist, in its nearest existing parent (nothing is created): checked before work whose
    results the first write would lose (an immutable or read-only folder had been found only
    after minutes of cells or sampling)."""
    target = Path(folder)
    while not target.exists() and target.parent != target:
        nowhere = leads_nowhere(target)  # the first write would fail after the work
        if nowhere:
            return f"{folder}: {nowhere}"
        target = target.parent
    try:
        fd, probe = tempfile.mkstemp(dir=target, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        return f"{folder}: cannot write there ({e.strerror or type(e).__name__})"
    return None


def blocked_cell_file(out_dir: Path, cell_ids: list[str]) -> str | None:
    """Why a cell to run could not save its work: a folder stands where its record, picture or
    arrays file goes (a file is renamed over a link or a FIFO, never over a folder), or None.
    Checked before any cell runs, where the first such save had ended the run with the
    finished cells' work of its batch lost."""
    for cid in cell_ids:
        for name in (f"{RECORDS}/{cid}.json", f"{PICTURES}/{cid}.png", f"{PICTURES}/{cid}.npy"):
            path = Path(out_dir) / name
            if path.is_dir() and not path.is_symlink():
                return (f"{path}: a folder stands where cell {cid} saves its results: remove "
                        "it, or run into another --out")
    return None


def leaderboard_problem(out_dir: Path) -> str | None:
    """Why a run's leaderboard could not be written into ``out_dir`` (a file stands where its
    figures' folder goes, a folder where its table goes), or None: checked before the cells
    run, where the error had come after all of them."""
    plots, board = Path(out_dir) / "plots", Path(out_dir) / "leaderboard.md"
    if os.path.lexists(plots) and not plots.is_dir():
        return f"{plots}: exists and is not a folder (the leaderboard's figures go there)"
    if board.is_dir() and not board.is_symlink():
        return f"{board}: a folder stands where the leaderboard goes"
    return None


def store_part_problem(folder: Path, what: str) -> str | None:
    """Why ``folder`` (through links) may not receive ``what``: it is, or lies inside, a
    results folder's own ``records/`` or ``cells/``, whose files the store reads as its own or
    quarantines into (a record written there would be quarantined, or overwritten), or None."""
    real = Path(os.path.realpath(folder))
    for part in (real, *real.parents):
        if part.name in (RECORDS, PICTURES) and any(  # record files, not check.json beside
                _RECORD_FILE.fullmatch(p.name) for p in (part.parent / RECORDS).glob("*.json")):
            return (f"{what}: inside a results folder's {part.name}/, whose files the store "
                    "reads as its own (a record there would be quarantined, or overwritten): "
                    "write it elsewhere")
    return None


def out_folder_problem(out_dir: Path) -> str | None:
    """Why a run may not write its store into ``out_dir`` (a file stands there, or it lies in
    another store's ``records/`` or ``cells/``), or None: what a run and its dry run refuse."""
    existing = Path(out_dir)
    while not existing.exists() and existing.parent != existing:  # FILE/sub: the run failed
        if existing.is_symlink():  # at its first write ("Not a directory"), its dry run not;
            return f"{existing}: {missing_link_target(existing)}"  # a link to nowhere too
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"{existing}: exists and is not a folder"
    for part in (RECORDS, PICTURES):  # the store's own folders: the run made them first
        inner = Path(out_dir) / part
        if inner.is_symlink() and not inner.exists():
            return f"{inner}: {missing_link_target(inner)}"
        if inner.exists() and not inner.is_dir():
            return f"{inner}: exists and is not a folder"
    return store_part_problem(out_dir, f"--out {out_dir}")


def write_output(path: Path, text: str) -> None:
    """Write a file the user named (``--output``): atomically onto a regular file or a new
    one; through a symbolic link (the link stays, ``/dev/stdout`` into a pipe or a log
    opened for appending) and into a device or a FIFO, straight, as a shell's redirection
    would. A rename onto those replaced them with a regular file."""
    path = Path(path)
    # through links (a loop: as given, no RuntimeError): the folder the file would land in
    problem = store_part_problem(Path(os.path.realpath(path)).parent, f"--output {path}")
    if problem:
        raise LeakbenchError(problem)
    if path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir()):
        try:
            with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:  # a loop
                # of links: ELOOP, one line; a caption's bytes that are not UTF-8 stay as given
                f.write(text)
        except OSError as e:  # a write's error names no file (/dev/full: "No space left")
            if e.filename is None:
                raise OSError(e.errno, e.strerror, str(path)) from None
            raise
        return
    write_atomic(path, text)
