"""One run per output folder: ``DIR/.lock`` holds the owner's PID, host and worker PIDs, each
with its process start time (so that a PID reused since, by a container restart or another
program, is not taken for the run or its worker).

The lock is taken atomically (``O_CREAT | O_EXCL``), and acquisitions take turns under a
kernel lock on ``DIR/.lock.guard``. A second run on the same folder while
the owner lives is refused with a clear message. A stale lock (its PID dead on this host) is
taken over, after the dead run's workers are gone: they stop on their own within a second or
two of their parent's death (:mod:`bench.executors.process`); any still alive after a grace
period is killed, so a restart never overlaps with the old run.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import time
from pathlib import Path
from typing import Any

from bench.registry import LeakbenchError, warn

LOCK = ".lock"
GUARD = ".lock.guard"  # serialises acquisitions of LOCK (never removed: it cannot go stale)
WORKER_GRACE_S = 10.0
PID_LIMIT = 1 << 22  # Linux's PID_MAX_LIMIT: a lock naming a larger PID is garbage
MAX_LOCK_BYTES = 1 << 18
"""A lock file's size, at most: its JSON is ~40 bytes a worker, 160 KB for the most workers a
run starts (4 096); a larger file is no lock, and is not read."""


class LockedError(LeakbenchError):
    """Another live run owns the output folder."""


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this host (zombies count as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; past the C int (garbage)
        return False
    except PermissionError:
        return True
    fields = _proc_stat(pid)  # a zombie (killed, not yet reaped) has finished running
    return fields is None or fields[0] != "Z"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first: field 3), or None
    where /proc does not say."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields or None


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks after boot, /proc/PID/stat field 22), or None where
    /proc does not say. Two processes with the same PID and start time are the same one."""
    fields = _proc_stat(pid)
    try:
        return None if fields is None else int(fields[19])
    except (IndexError, ValueError):
        return None


def same_process(pid: int, start: Any) -> bool:
    """Whether the live ``pid`` is the process that had ``start`` (True where either start time
    is unknown: an older lock file, or no /proc)."""
    now = process_start(pid)
    return not isinstance(start, int) or now is None or now == start


class RunLock:
    """``with RunLock(out_dir):`` owns ``out_dir`` for one run; released on exit."""

    def __init__(self, out_dir: Path, elsewhere: str = "pass another --out") -> None:
        self.path = Path(out_dir) / LOCK
        self.elsewhere = elsewhere  # how the command that is refused names another folder
        self.info: dict[str, Any] = {"pid": os.getpid(), "host": socket.gethostname(),
                                     "start": process_start(os.getpid()), "workers": [],
                                     "worker_starts": {}}
        self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Acquisitions take turns: two restarts after a kill could otherwise both judge the
        # lock stale and both take it, or read the other's lock half-written. The guard is a
        # kernel lock (flock), released when its holder dies, so it can never go stale.
        guard = os.open(self.path.with_name(GUARD), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            self._acquire()
        finally:
            os.close(guard)  # closing releases the flock

    def _acquire(self) -> None:
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.info, f)
            self.held = True
            return
        raise LockedError(f"{self.path}: could not take the run lock")

    def _take_over_if_stale(self) -> None:
        if self.path.is_dir() and not self.path.is_symlink():  # nothing a run can take over
            raise LockedError(f"{self.path}: is a folder where the run lock belongs; remove "
                              "it if no run is using this folder")
        self._check_file()
        owner = self._read()
        if owner is None:  # being written this instant, or garbage: look again shortly
            time.sleep(0.2)
            owner = self._read()
            if owner is None:
                warn(f"{self.path}: unreadable lock file, taken over")
                self.path.unlink(missing_ok=True)
                return
        pid, host = owner.get("pid"), owner.get("host")
        if host != self.info["host"]:
            raise LockedError(f"{self.path.parent} is in use by PID {pid} on host {host}; if "
                              f"that run is over, delete {self.path}")
        if isinstance(pid, int) and pid_alive(pid) and same_process(pid, owner.get("start")):
            raise LockedError(f"{self.path.parent} is in use by a running leakbench (PID {pid}"
                              f"); wait for it to finish or stop it, or {self.elsewhere}")
        workers = [w for w in owner.get("workers", []) if isinstance(w, int)]
        starts = owner.get("worker_starts")
        wait_for_workers(workers, starts=starts if isinstance(starts, dict) else None)
        warn(f"{self.path}: stale lock of PID {pid} (no longer running), taken over")
        self.path.unlink(missing_ok=True)

    def _check_file(self) -> None:
        """Refuse a lock path no run wrote, before it is opened: a FIFO there blocked the read
        for ever, a link to /dev/zero read until memory ran out."""
        try:
            info = os.stat(self.path)
        except OSError:
            return  # gone meanwhile, or a dangling link: read as garbage, taken over
        if not stat.S_ISREG(info.st_mode):
            raise LockedError(f"{self.path}: not a regular file (a FIFO, a device, or a link "
                              "to one) where the run lock belongs; remove it if no run is "
                              "using this folder")
        if info.st_size > MAX_LOCK_BYTES:
            raise LockedError(f"{self.path}: {info.st_size} bytes, larger than any run lock "
                              f"({MAX_LOCK_BYTES} at most); remove it if no run is using "
                              "this folder")

    def _read_text(self) -> str | None:
        """The lock file's text; None where it is not a regular file of at most
        ``MAX_LOCK_BYTES`` (swapped since :meth:`_check_file`: never blocks, never reads
        more)."""
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO opens without a writer
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            data = f.read(MAX_LOCK_BYTES + 1)
        return data.decode() if len(data) <= MAX_LOCK_BYTES else None

    def _read(self) -> dict[str, Any] | None:
        """The lock's owner, or None when the file is not a lock (garbage: no PID, or not one
        a system gives, such as "12" or 2**70)."""
        try:
            text = self._read_text()
            if text is None:
                return None
            owner = json.loads(text)
        except (OSError, ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(owner, dict):
            return None
        pid = owner.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or not 0 < pid <= PID_LIMIT:
            return None
        return owner

    def add_worker(self, pid: int) -> None:
        """Record a worker's PID, so that a run taking over a stale lock can wait for it."""
        if not self.held:
            return
        live = [w for w in self.info["workers"] if pid_alive(w)]
        self.info["workers"] = [*live, pid]
        self.info["worker_starts"] = {
            **{k: v for k, v in self.info["worker_starts"].items() if int(k) in live},
            str(pid): process_start(pid)}
        tmp = self.path.with_name(f"{LOCK}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.info))
        os.replace(tmp, self.path)

    def release(self) -> None:
        if self.held:
            owner = self._read()
            if owner is None or owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False


def wait_for_workers(pids: list[int], grace: float = WORKER_GRACE_S,
                     starts: dict[str, Any] | None = None) -> None:
    """Wait until a dead run's workers have exited; kill those still alive after ``grace``.
    A PID is the worker only while its start time is the one recorded (``starts``, by PID as
    text); a lock without start times trusts a spawned worker's command line."""
    deadline = time.monotonic() + grace

    def ours(pid: int) -> bool:
        if starts is not None and str(pid) in starts:
            return same_process(pid, starts[str(pid)])
        return _is_worker(pid)

    alive = [p for p in pids if pid_alive(p) and ours(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [p for p in alive if pid_alive(p)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _is_worker(pid: int) -> bool:
    """Whether ``pid`` still looks like a spawned worker (``multiprocessing`` in its command
    line: not a reused PID of another program), where /proc says."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the PID
    return b"multiprocessing" in cmdline
