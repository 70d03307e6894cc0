"""Where a failed cell stopped, as its record's ``error`` begins: the leaderboard counts a cell
that never reached its attack as no measurement (:mod:`bench.leaderboard.uncertainty`),
and a resume runs a cell no worker began again (:mod:`bench.resume`).

Its own module, free of torch, so that the tables and the executors share the words.
"""

from __future__ import annotations

SETUP = "setup"  # the pipeline's first stage: data, victim, client update, defense
NEVER_BEGAN = "never began: "  # a task no worker started: no fault of its cells


def never_began(error: object) -> bool:
    """Whether a failure record's ``error`` says its cell never began (resume runs it again:
    it says nothing of the cell, only of the machine or cluster at the time)."""
    return isinstance(error, str) and error.startswith(NEVER_BEGAN)


def never_attacked(status: object, error: object) -> bool:
    """Whether a failed cell stopped before its attack saw an update: an ``error`` in its
    setup stage (``setup: …``, :meth:`bench.pipeline._Run.guard`) or a task no worker began
    (an ``error`` or ``timeout``). It measured nothing of the attack or the defense."""
    if status not in ("error", "timeout") or not isinstance(error, str):
        return False
    return (status == "error" and error.startswith(f"{SETUP}: ")) or never_began(error)
