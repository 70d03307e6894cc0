"""One locked, atomic cache for built artifacts (trained victims, tokenizers), keyed by settings.

Every artifact lives under ``$LEAKBENCH_CACHE/<kind>/`` (default ``~/.cache/leakbench/<kind>/``)
as one file per key, a hash of everything that determines it. :func:`cached` reads the file
if it is there and readable; otherwise it takes an exclusive lock beside it (POSIX ``flock``),
looks again (a parallel worker may have just built it), builds, and writes atomically (a
temporary file, then a rename): parallel workers build an artifact once and never read a torn
file.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

from bench.paths import expanded, leads_nowhere
from bench.registry import LeakbenchError, warn
from bench.store import write_atomic

T = TypeVar("T")


def cache_root() -> Path:
    """$LEAKBENCH_CACHE, or ~/.cache/leakbench."""
    root = os.environ.get("LEAKBENCH_CACHE", "").strip()  # blank is unset, as elsewhere
    return expanded(root) if root else expanded("~") / ".cache" / "leakbench"


def cache_problem() -> str | None:
    """Why the cache folder cannot hold entries (it, or a folder above it, is a file or a link
    that leads nowhere, or it cannot be made), or None: checked before a run, where every
    trained-victim cell had become an error record. The folder is made here."""
    root = cache_root()
    where = "$LEAKBENCH_CACHE" if os.environ.get("LEAKBENCH_CACHE", "").strip() else \
        "the cache folder"
    for p in (root, *root.parents):
        nowhere = leads_nowhere(p)
        if nowhere:
            return f"{where} {root}: {nowhere}"
        if p.exists() and not p.is_dir():
            return f"{where} {root}: {p} exists and is not a folder"
    try:  # else, under /proc say, every trained-victim cell became an error record, exit 0
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only cache is served as it is (:func:`cached`)
        if e.errno not in UNWRITABLE:
            return f"{where} {root}: cannot be made ({e.strerror or e})"
    return None


def settings_key(settings: dict[str, Any], length: int = 32) -> str:
    """The hex SHA-256 of ``settings`` as canonical JSON, cut to ``length``."""
    canon = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()[:length]


@contextmanager
def build_lock(path: Path) -> Iterator[None]:
    """An exclusive lock beside ``path`` (POSIX ``flock``; none where unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: the atomic write alone keeps it safe
        yield
        return
    with open(path.with_suffix(".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)
_WARNED_UNWRITABLE: set[Path] = set()
_UNCACHED: dict[Path, Path] = {}  # cache entry → this process's private copy of it


def cached(path: Path, build: Callable[[], bytes], load: Callable[[Path], T | None]) -> T:
    """``load(path)``; when it gives None (absent or unreadable), build the bytes under the
    lock, write them atomically and load them. An entry that is not a regular file (a FIFO
    blocked the load for ever, a folder failed the rename) is refused in one line. A cache
    that can be read but not written (a read-only mount of shared, pre-built entries) serves
    what it holds; what it lacks is built once in this process and kept in a private copy,
    with a warning, where every such cell had become an error record."""
    if path.exists() and not path.is_file():
        raise LeakbenchError(f"cache entry {path} is not a regular file: remove it")
    found = load(path) if path.exists() else None
    spare = _UNCACHED.get(path)  # built here before, the cache being read-only
    if found is None and spare is not None:
        if spare.is_file():
            found = load(spare)
        else:  # a cleaner removed the private copy: build it again
            del _UNCACHED[path]
    if found is not None:
        return found
    stage, data = "lock", None
    try:
        with build_lock(path):  # a second worker waits here, then loads the first one's file
            found = load(path) if path.exists() else None
            if found is not None:
                return found
            stage = "build"
            data = build()
            stage = "write"
            write_atomic(path, data)
    except OSError as e:
        if stage == "build" or e.errno not in UNWRITABLE:
            raise
        return _uncached(path, data if data is not None else build(), load, e)
    return _built(path, path, load)


def _built(entry: Path, file: Path, load: Callable[[Path], T | None]) -> T:
    """``load(file)``, just built for the cache ``entry``: it must load."""
    found = load(file)
    if found is None:
        raise ValueError(f"{entry}: the artifact just built does not load")
    return found


def _uncached(path: Path, data: bytes, load: Callable[[Path], T | None], error: OSError) -> T:
    """The artifact loaded from a private temporary copy: the cache folder is not writable."""
    if path.parent not in _WARNED_UNWRITABLE:  # once per folder and process
        _WARNED_UNWRITABLE.add(path.parent)
        warn(f"cache folder {path.parent} is not writable ({error.strerror or error}): "
             "what it lacks is built once in each worker process and not kept")
    # a folder of this process's, removed at its exit: a load may keep the path it is given
    spare = Path(tempfile.mkdtemp(prefix="leakbench-uncached-")) / path.name
    atexit.register(shutil.rmtree, spare.parent, ignore_errors=True)
    spare.write_bytes(data)
    _UNCACHED[path] = spare
    return _built(path, spare, load)


def torch_bytes(obj: Any) -> bytes:
    """``obj`` (tensors, dicts of them, plain data) as the bytes ``torch.save`` writes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def state_bytes(module: torch.nn.Module) -> bytes:
    """A module's weights (a detached copy of its state dict) as ``torch.save`` bytes."""
    return torch_bytes({k: v.detach().clone() for k, v in module.state_dict().items()})


def load_weights(module: torch.nn.Module, path: Path) -> bool:
    """Load cached weights into ``module``; False when unreadable (then it is rebuilt)."""
    try:
        module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:
        return False
    return True
