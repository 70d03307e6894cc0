"""Paths the user gives (flags, suite parameters, environment variables), expanded."""

from __future__ import annotations

import os
from pathlib import Path

from bench.registry import LeakbenchError


def expanded(path: str | os.PathLike[str], error: type[LeakbenchError] = LeakbenchError
             ) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded. ``~nosuchuser/x``, or ``~`` where
    no home directory is known, is one ``error`` naming the path: ``Path.expanduser``'s
    RuntimeError had been a traceback from every command that read such a path."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise error(f"{os.fspath(path)}: '~' here names no user with a home directory"
                    ) from None


def missing_link_target(path: str | os.PathLike[str]) -> str:
    """What a symbolic link whose target is missing (or a loop) is, in the words of the error
    a write through it gets: the run's and its dry run's, and the CLI's for a failed mkdir."""
    return f"a symbolic link to {os.readlink(path)}, which is missing or a loop"


def leads_nowhere(path: Path) -> str | None:
    """Why ``path`` cannot be followed when it is a symbolic link to nowhere (a loop, or a
    missing target: ``exists()`` is False, and a mkdir or a write there fails), else None."""
    if path.is_symlink() and not path.exists():
        return f"{path} is a link that leads nowhere (a loop, or no target)"
    return None


def resolved(path: str | os.PathLike[str], what: str = "") -> Path:
    """``path`` with its links followed (``Path.resolve``); a loop of links (RuntimeError on
    Python 3.11, OSError later) is one LeakbenchError naming the path after ``what``."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError) as e:
        raise LeakbenchError(f"{what}{os.fspath(path)}: cannot follow its links ({e})"
                             ) from None


def store_problem(out_dir: Path) -> str | None:
    """Why ``out_dir`` holds no record store (no such folder, a file, no ``records/`` in it),
    or None: a command that reads a results folder names that, not an empty store."""
    folder = Path(out_dir)
    if not folder.exists():
        return f"{folder}: no such folder"
    if not folder.is_dir():
        return f"{folder}: not a folder"
    if not (folder / "records").is_dir():
        return f"{folder}: no records folder (run a suite into it first)"
    return None


FORWARDED_ENV = ("LEAKBENCH_DATA", "LEAKBENCH_CACHE", "LEAKBENCH_LPIPS_WEIGHTS",
                 "LEAKBENCH_FID_WEIGHTS")


def driver_env() -> dict[str, str]:
    """The driver's data, cache and weight locations (those of :data:`FORWARDED_ENV` it sets),
    a relative one made absolute against its working directory: the driver checked them before
    the run, and a worker started elsewhere (another node, or a ``ray start`` run without these
    variables or from another folder) would otherwise read its own, or none."""
    out = {}
    for name in FORWARDED_ENV:
        value = os.environ.get(name, "").strip()  # blank is unset, as the readers take it
        if value:
            out[name] = value if value.startswith("~") else os.path.abspath(value)
    return out
