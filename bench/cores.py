"""How many cores this process may use, and how a run splits them into workers × threads.

``usable_cores()`` is the smaller of the CPUs in the affinity mask (``taskset``, a container's
cpuset) and the cgroup's CPU quota (a container's ``--cpus``, a systemd unit's ``CPUQuota=``:
the process's own group's and its parents'), so a run inside a 2-CPU
container on a 64-core host uses 2, not 64. ``plan_parallelism`` turns ``--jobs``/``--threads``
into a plan that never asks for more threads than cores unless a flag does (``--jobs`` or
``--threads`` above the cores), and then says so in a warning:

==================  =====================  ===================
given               workers (``jobs``)     torch threads each
==================  =====================  ===================
neither             cores                  1
``--threads T``     max(1, cores // T)     T
``--jobs J``        J                      max(1, cores // J)
``--jobs 0``        inline (this process)  cores (one cell at a time gets them all)
both                as given
==================  =====================  ===================

Either flag is at most ``MAX_PARALLELISM`` (4096): a bound on typos (``--threads`` with a
digit too many reached torch as an integer overflow), not on oversubscription, which the
warning covers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from bench.registry import LeakbenchError, warn

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
CGROUP_V1 = (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
             Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us"))


def affinity_cores() -> int:
    """The CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where the
    platform has no mask)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota(quota: str, period: str) -> int | None:
    """``ceil(quota / period)``, or None for no limit (``max``, ``-1``) or unreadable text."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    if q <= 0 or p <= 0:
        return None
    return max(1, math.ceil(q / p))


def cgroup_v2_files(proc: Path = PROC_CGROUP, root: Path = CGROUP_ROOT) -> list[Path]:
    """The ``cpu.max`` files that bound this process on cgroup v2, its own group's first, then
    each parent's up to the root's: a quota on the process's own group (systemd's
    ``CPUQuota=``, a container sharing the host's cgroup namespace) or on a parent binds it,
    and only the root's had been read. A container with its own namespace sees its group as
    the root; a group outside the namespace's view (``..``) leaves the root's alone."""
    text = _read(proc) or ""
    rel = next((line[3:] for line in text.splitlines() if line.startswith("0::")), "/")
    parts = [p for p in rel.split("/") if p]
    if ".." in parts:
        parts = []
    return [root.joinpath(*parts[:i], "cpu.max") for i in range(len(parts), -1, -1)]


def cgroup_cores(v2: Path | Sequence[Path] | None = None, v1: tuple[Path, Path] = CGROUP_V1
                 ) -> int | None:
    """The cgroup's CPU quota in whole cores (rounded up), or None when there is none.

    cgroup v2: each ``cpu.max`` (``v2``, default :func:`cgroup_v2_files`) holds ``"QUOTA
    PERIOD"`` or ``"max PERIOD"``, and the lowest quota binds; cgroup v1:
    ``cpu.cfs_quota_us`` (``-1``: no limit) and ``cpu.cfs_period_us``."""
    files = cgroup_v2_files() if v2 is None else [v2] if isinstance(v2, Path) else list(v2)
    texts = [text.split() for text in map(_read, files) if text is not None]
    if texts:  # "max PERIOD": no limit
        quotas = [q for q in (_quota(*t) if len(t) == 2 else None for t in texts) if q]
        return min(quotas) if quotas else None
    quota, period = _read(v1[0]), _read(v1[1])
    if quota is None or period is None:
        return None
    return _quota(quota, period)


def usable_cores(v2: Path | Sequence[Path] | None = None, v1: tuple[Path, Path] = CGROUP_V1
                 ) -> int:
    """The cores this process may use: the affinity mask, capped by the cgroup quota; >= 1."""
    cores = affinity_cores()
    quota = cgroup_cores(v2, v1)
    return max(1, min(cores, quota) if quota is not None else cores)


MAX_PARALLELISM = 4096
"""The most workers (``--jobs``) or torch threads per worker (``--threads``) a run takes."""


def check_parallelism(jobs: int | None, threads: int | None) -> None:
    """A LeakbenchError for a ``--jobs`` outside 0..MAX_PARALLELISM or a ``--threads``
    outside 1..MAX_PARALLELISM."""
    if jobs is not None and jobs < 0:
        raise LeakbenchError(f"--jobs: expected 0 (inline) or more workers, got {jobs}")
    if threads is not None and threads < 1:
        raise LeakbenchError(f"--threads: expected 1 or more torch threads, got {threads}")
    for flag, value in (("--jobs", jobs), ("--threads", threads)):
        if value is not None and value > MAX_PARALLELISM:
            raise LeakbenchError(f"{flag}: at most {MAX_PARALLELISM}, got {value}")


def plan_parallelism(jobs: int | None, threads: int | None, cores: int, quiet: bool = False
                     ) -> tuple[int, int]:
    """``(jobs, threads)`` for a run on ``cores`` cores (see the module's table); ``None`` is
    "not given". ``jobs`` 0 is inline: cells run in this process, one at a time. ``quiet``:
    no oversubscription warning here (a run warns once it knows its tasks)."""
    check_parallelism(jobs, threads)
    cores = max(1, cores)
    if jobs is None:
        plan = (cores, 1) if threads is None else (max(1, cores // threads), threads)
    elif threads is None:
        plan = jobs, cores if jobs == 0 else max(1, cores // jobs)
    else:
        plan = jobs, threads
    if not quiet:
        warn_oversubscribed(*plan, cores)
    return plan


def warn_oversubscribed(jobs: int, threads: int, cores: int, tasks: int | None = None) -> None:
    """A warning where the workers that will run (``jobs``, or fewer for fewer ``tasks``)
    times ``threads`` exceed ``cores``: only where --jobs or --threads asked for it. With
    ``--jobs 5`` and 2 tasks, 2 workers start: it had warned of 5 × threads."""
    workers = max(1, jobs if tasks is None or jobs == 0 else min(jobs, tasks))
    if workers * threads <= cores or tasks == 0:
        return
    who = ("inline" if jobs == 0 else f"--jobs {jobs}" if workers == jobs
           else f"{workers} workers (--jobs {jobs}, {tasks} tasks)")
    warn(f"{who} × --threads {threads} = {workers * threads} threads on {cores} usable "
         f"core{'s' if cores != 1 else ''}: oversubscribed, timings will suffer")


def worker_cores(index: int, jobs: int, threads: int,
                 mask: Sequence[int] | None = None) -> list[int] | None:
    """The cores worker ``index`` of ``jobs`` is pinned to: its own ``threads`` of them, when
    the workers fill this process's affinity mask exactly (and no cgroup quota, rounded up to
    whole cores, is below it); else None (no pinning). Pinned, a worker shares its core only
    with outside load: beside one CPU-bound process, two unpinned workers on two cores can
    be crowded onto one."""
    if mask is None:
        try:
            mask = sorted(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            return None
        if usable_cores() != len(mask):  # a quota: the scheduler may run us anywhere
            return None
    if jobs < 2 or threads < 1 or len(mask) != jobs * threads or not 0 <= index < jobs:
        return None
    return list(mask[index * threads:(index + 1) * threads])
