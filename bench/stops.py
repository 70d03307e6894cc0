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


_received: list[int] = []  # SIGTERMs the command line's handler took during its block


def note_sigterm() -> Terminated:
    """Remember that SIGTERM arrived, and the exception that stands for it."""
    _received.append(signal.SIGTERM)
    return Terminated()


def forget_sigterm() -> None:
    """A new block of the command line begins: no SIGTERM has arrived in it."""
    _received.clear()


def is_sigterm(e: BaseException) -> bool:
    """Whether interrupt ``e`` stands for SIGTERM: a :class:`Terminated`, or a plain
    KeyboardInterrupt raised while one was handled (``ray.wait`` re-raises whatever a signal
    handler raised inside it as KeyboardInterrupt, so a run under Ray exited 130,
    "interrupted", for a SIGTERM)."""
    return isinstance(e, Terminated) or bool(_received)
