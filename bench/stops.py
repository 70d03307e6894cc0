"""A run stopped from outside: SIGTERM as an exception, which the CLI maps to exit 143.

Its own module so that the executors (Ray's start turns a SIGTERM into it) and the command
line share it without importing each other.
"""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's KeyboardInterrupt would be: a run stopped by a job
    scheduler or ``kill`` then stops its workers, releases its folder's lock and keeps its
    finished cells as Ctrl-C does (it had died at once, leaving the lock and its workers'
    semaphores behind)."""

    signum = signal.SIGTERM
