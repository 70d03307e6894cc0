"""The record store: one JSON file per cell under ``DIR/records/``, written atomically.

Every reader goes through :func:`load_records`: a record that does
not parse or does not match the schema is never trusted. It is named in one warning line,
moved to ``DIR/records/quarantine/``, and its cell counts as not done. A reader that only
reads the folder (``leakbench diff``, ``rerun``, ``run --dry-run``) passes
``quarantine=False``: the damaged record is named and left out, and nothing in the folder
moves. A record file the system refuses to read (permissions, an I/O error) says nothing of
its content: it is never quarantined, and the command ends with one line naming it
(:class:`UnreadableRecord`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import IO, Any

from bench.json_values import dumps, unwritable
from bench.record_fields import PICTURES, nested_problem
from bench.records import (
    MAX_BATCH_SIZE,
    RECORD_TYPES,
    RECORD_VERSION,
    STATUSES,
    Record,
    metric_out_of_bounds,
    record_modality,
    registered_metric,
)
from bench.registry import LeakbenchError, has_control, short, warn

RECORDS = "records"
QUARANTINE = "quarantine"
MAX_RECORD_BYTES = 50_000_000


def record_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / RECORDS / f"{cell_id}.json"


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)  # read once per process: os.umask can only be read by setting it
    os.umask(mask)
    return mask


def write_atomic(path: Path, text: str | bytes | IO[bytes]) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file.
    The file gets the mode a plain write would give it: an existing file's, else 0666 less
    the umask (the temporary file's own mode is 0600, owner-only). An open binary file is
    copied in chunks (merge copies artifacts of hundreds of MB), never read whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o666 & ~_umask()
    # a folder's name need not be UTF-8 (a report names it): its own bytes, as the disk has them
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:  # name the file asked for, not the temporary one
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                shutil.copyfileobj(data, f)
            f.flush()
            if hasattr(os, "fchmod"):  # POSIX
                os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(out_dir: Path) -> int:
    """Delete the temporary files of writes a killed run left half-done (``.NAME.*.tmp``);
    call only while holding the folder's run lock. Returns how many were removed."""
    removed = 0
    for sub in (RECORDS, PICTURES):
        folder = Path(out_dir) / sub
        if folder.is_dir():
            for tmp in folder.rglob(".*.tmp"):
                tmp.unlink(missing_ok=True)
                removed += 1
    return removed


def save_record(out_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(out_dir, record["cell_id"])
    write_atomic(path, dumps(record))
    return path


def save_outcome(out_dir: Path, record: dict[str, Any],
                 artifacts: dict[str, bytes | IO[bytes]]) -> Path:
    """Write a cell's artifacts (bytes, or an open file to copy), then its record (a record
    never points at a missing file)."""
    for rel, data in artifacts.items():
        write_atomic(Path(out_dir) / rel, data)
    return save_record(out_dir, record)


def load_record(path: Path) -> dict[str, Any]:
    """One record's JSON, unchecked (see :func:`read_record` for the checked reader)."""
    return json.loads(Path(path).read_text())


_A = {int: "an integer"}  # a type as the validator names it (not "a int"); else "a dict"
_COMMON = {"suite": str, "cell_id": str, "status": str, "seed": int, "defense": list,
           "arch": dict, "dataset": dict, "defense_label": str, "arch_label": str,
           "dataset_label": str}
_ATTACK = {"attack": dict, "attack_label": str, "batch_size": int}
_UTILITY = {"utility": dict}  # the training setting: every utility record has one
_BY_KIND = {"attack": _ATTACK, "utility": _UTILITY}
_OPTIONAL = {"metrics": dict, "timing": dict, "provenance": dict, "client": dict,
             "derived_seeds": dict, "granted": list, "defense_info": dict, "error": str,
             "budget": dict, "victim": str, "curve": list, "trial_batch": dict,
             "converged_at": dict, "attack_info": dict, "utility": dict}


def _metric_value_key(key: str) -> bool:
    """Whether ``key`` holds one number (or None): a registered metric, its ``_worst``, or
    ``success`` (a bool)."""
    return key == "success" or registered_metric(key) is not None


RANKED = {"image": "psnr", "text": "rouge1"}  # what a finished attack is ranked by: it has it


NEWER = "written by a newer leakbench"


def record_problem(d: Any, stem: str | None = None) -> str | None:
    """Why a parsed record does not match the schema, or None when it does."""
    if not isinstance(d, dict):
        return "not a JSON object"
    kind = d.get("kind", "attack")
    if not isinstance(kind, str) or kind not in RECORD_TYPES:  # a list is unhashable
        return f"unknown kind {short(kind)}"
    version = d.get("record_version", RECORD_VERSION)  # absent: the records before the field
    if isinstance(version, int) and not isinstance(version, bool) and version > RECORD_VERSION:
        return f"{NEWER} (record_version {version}; this one reads 1 to {RECORD_VERSION})"
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return (f"record_version {short(version)} is not one this leakbench reads "
                f"(1 to {RECORD_VERSION})")
    required = {**_COMMON, **_BY_KIND.get(kind, {})}
    for key, typ in required.items():
        if key not in d:
            return f"missing field {key!r}"
        if isinstance(d[key], bool) or not isinstance(d[key], typ):
            return f"field {key!r} is not {_A.get(typ, 'a ' + typ.__name__)}"
    for key, typ in _OPTIONAL.items():
        if d.get(key) is not None and not isinstance(d[key], typ):
            return f"field {key!r} is not {_A.get(typ, 'a ' + typ.__name__)}"
    if d["status"] not in STATUSES:
        return f"unknown status {d['status']!r}"
    if stem is not None and d["cell_id"] != stem:
        return f"its cell_id {d['cell_id']!r} is not its file name"
    parts = [d["arch"], d["dataset"], *d["defense"], *([d["attack"]] if kind == "attack" else [])]
    if not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts):
        return "a component without a name"
    for key, value in (d.get("metrics") or {}).items():
        if value is None or (isinstance(value, (dict, list)) and not _metric_value_key(key)):
            continue  # n/a, or a structure beside the metrics (per_image, matching, privacy)
        if key == "success":  # counted by the tables and by check alike: a bool only
            ok = isinstance(value, bool)
        elif key.endswith("_note"):
            ok = isinstance(value, str)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            return f"metric {key!r} has a value of the wrong type"
        problem = metric_out_of_bounds(key, value)
        if problem:
            return problem
    ranked = RANKED.get(record_modality(d)) if kind == "attack" else None
    if d["status"] == "ok" and ranked and not isinstance((d.get("metrics") or {}).get(ranked),
                                                         (int, float)):
        return f"an ok attack record without {ranked}, the metric it is ranked by"
    floors = d.get("floor_metrics")
    if floors is not None and not isinstance(floors, dict):
        return "field 'floor_metrics' is not a dict"
    for key, value in (floors or {}).items():  # they enter the means for failed seeds
        if value is not None and (isinstance(value, (bool, str)) or not isinstance(
                value, (int, float))):
            return f"floor metric {key!r} has a value of the wrong type"
        problem = metric_out_of_bounds(key, value) if value is not None else None
        if problem:
            return "floor " + problem
    shown = [(k, v) for k, v in d.items() if k.endswith("_label") or k == "suite"]
    shown += [(f"provenance.{k}", v) for k, v in (d.get("provenance") or {}).items()]
    for key, value in shown:  # tables print them: a newline broke a table, or began a heading
        if isinstance(value, str) and has_control(value):
            return f"field {key!r} holds a control character (a line break, a tab, …)"
    if d["seed"] < 0:  # a suite's seeds are 0..seeds-1 (the tables print it)
        return f"seed {d['seed']} is negative"
    if kind == "attack" and not 1 <= d["batch_size"] <= MAX_BATCH_SIZE:  # a suite's limit
        return f"batch_size {d['batch_size']} is outside 1..{MAX_BATCH_SIZE}"
    problem = nested_problem(d)
    if problem:
        return problem
    problem = unwritable(d, "")  # JSON readers accept NaN and infinity; the store never writes them
    if problem:
        return problem
    try:
        Record.from_json(d)
    except (TypeError, ValueError) as e:
        return f"does not build a record ({e})"
    return None


class UnreadableRecord(LeakbenchError):
    """A record file the system would not read (its permissions, an I/O error): its content
    is unknown, so it is neither trusted nor quarantined."""


VANISHED = "gone while it was read (another command moved it)"


class _RepeatedKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a sound record file, else (None, what is wrong with it): (None,
    :data:`VANISHED`) when it no longer exists (readers take no lock: another one may have
    just quarantined it); an :class:`UnreadableRecord` when it cannot be read at all."""
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None, f"larger than {MAX_RECORD_BYTES} bytes"
        text = path.read_bytes().decode("utf-8")
        d = json.loads(text, object_pairs_hook=_unique_keys)
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except _RepeatedKey as e:  # json keeps the last copy: an appended "status" won silently
        return None, f"key {e.args[0]!r} appears twice in one object"
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno})"
    except FileNotFoundError:
        return None, VANISHED
    except OSError as e:
        raise UnreadableRecord(f"{path}: cannot be read ({e.strerror or type(e).__name__}); "
                               "left where it is: fix its permissions (or the disk) and run "
                               "again") from None
    except (ValueError, RecursionError) as e:
        return None, f"unreadable ({type(e).__name__})"
    problem = record_problem(d, path.stem)
    return (None, problem) if problem else (d, None)


def quarantine(path: Path, reason: str) -> Path:
    """Move a damaged record to ``records/quarantine/`` and say so in one warning line."""
    folder = path.parent / QUARANTINE
    folder.mkdir(exist_ok=True)
    target, n = folder / path.name, 1
    while target.exists():
        target, n = folder / f"{path.stem}.{n}{path.suffix}", n + 1
    try:
        os.replace(path, target)
    except OSError as e:
        warn(f"{path}: damaged record ({reason}), ignored; could not move it to {folder} "
             f"({e.strerror})")
        return path
    warn(f"{path}: damaged record ({reason}), ignored and moved to {target}")
    return target


def _scan(out_dir: Path, move: bool = True) -> tuple[list[tuple[Path, dict[str, Any]]],
                                                     list[str]]:
    """The sound records with their paths, and the ids of those a newer leakbench wrote."""
    folder = Path(out_dir) / RECORDS
    if not folder.is_dir():
        return [], []
    good, newer = [], []
    for path in sorted(folder.glob("*.json")):
        if not path.is_file():
            continue
        d, problem = read_record(path)
        if problem == VANISHED:
            continue
        if problem and problem.startswith(NEWER):  # not damaged: never moved, not read
            newer.append(path)
        elif problem and move:
            quarantine(path, problem)
        elif problem:
            warn(f"{path}: damaged record ({problem}), ignored (left in place)")
        else:
            good.append((path, d))
    if newer:
        warn(f"{folder}: {len(newer)} record(s) were {NEWER}, e.g. {newer[0].name}: left out "
             "and left in place (upgrade leakbench to read them)")
    return good, [p.stem for p in newer]


def load_records(out_dir: Path, quarantine: bool = True) -> list[dict[str, Any]]:
    """Every sound record under ``out_dir``, ordered by cell id; damaged ones quarantined, or
    with ``quarantine=False`` only named in a warning and left where they are (read-only).
    Records that describe one cell under two ids are named in a warning."""
    return read_store(out_dir, quarantine)[0]


def read_store(out_dir: Path, quarantine: bool = True) -> tuple[list[dict[str, Any]], set[str]]:
    """:func:`load_records`, and the cell ids whose records a newer leakbench wrote (left in
    place, not read: a run must not write over them)."""
    good, newer = _scan(out_dir, move=quarantine)
    records = [d for _, d in good]
    _warn_copies(records, Path(out_dir))
    return records, set(newer)


_SAME_CELL = ("suite", "kind", "attack_label", "defense_label", "arch_label", "dataset_label",
              "batch_size", "seed", "victim", "client", "derived_seeds")


def _warn_copies(records: list[dict[str, Any]], out_dir: Path) -> None:
    """A cell's id is the digest of its configuration, so two ids with one configuration are
    a copy made by hand (or another tool): every table would count it twice."""
    first: dict[str, str] = {}
    copies = []
    for d in records:
        key = json.dumps([d.get(k) for k in _SAME_CELL], sort_keys=True, default=str)
        if key in first:
            copies.append((first[key], d["cell_id"]))
        else:
            first[key] = d["cell_id"]
    if copies:
        a, b = copies[0]
        warn(f"{out_dir / RECORDS}: {len(copies)} record(s) repeat another's cell under "
             f"another id (e.g. {b} repeats {a}), and every table counts both: remove the copy")
