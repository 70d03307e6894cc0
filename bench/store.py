"""The record store: one JSON file per cell under ``DIR/records/``, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

RECORDS = "records"
PICTURES = "cells"


def record_path(out_dir: Path, cell_id: str) -> Path:
    return Path(out_dir) / RECORDS / f"{cell_id}.json"


def write_atomic(path: Path, text: str | bytes) -> None:
    """Write via a temporary file in the same folder and rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=1, sort_keys=True, allow_nan=False) + "\n"


def save_record(out_dir: Path, record: dict[str, Any]) -> Path:
    path = record_path(out_dir, record["cell_id"])
    write_atomic(path, dumps(record))
    return path


def save_outcome(out_dir: Path, record: dict[str, Any], artifacts: dict[str, bytes]) -> Path:
    """Write a cell's artifacts, then its record (a record never points at a missing file)."""
    for rel, data in artifacts.items():
        write_atomic(Path(out_dir) / rel, data)
    return save_record(out_dir, record)


def load_record(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def load_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every record under ``out_dir``, ordered by cell id."""
    folder = Path(out_dir) / RECORDS
    if not folder.is_dir():
        return []
    return [load_record(p) for p in sorted(folder.glob("*.json"))]


def done_ids(out_dir: Path) -> set[str]:
    folder = Path(out_dir) / RECORDS
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()
