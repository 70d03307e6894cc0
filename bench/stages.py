"""Where a failed cell stopped, as its record's ``error`` begins: the leaderboard counts a cell
that never reached its attack as no measurement (:mod:`bench.leaderboard.uncertainty`),
and a resume runs a cell no worker began again (:mod:`bench.resume`).

Its own module, free of torch, so that the tables and the executors share the words.
"""

from __future__ import annotations

SETUP = "setup"  # the pipeline's first stage: data, victim, client update, defense
ATTACK = "attack"  # the stage after it: the attack sees the observation
NEVER_BEGAN = "never began: "  # a task no worker started: no fault of its cells
STAGE = -2  # the member index of a stage mark in a task's stream: ``(STAGE, stage name)``


def in_stage(stage: str | None, error: str) -> str:
    """The ``error`` of a task an executor stopped (its timeout, its worker's death) while it
    was in ``stage`` (the last stage mark it sent; None: it sent none, as a utility cell):
    ``setup: …`` where its cells had not reached their attack, as a stage that raised says."""
    return f"{SETUP}: {error}" if stage == SETUP else error


def never_began(error: object) -> bool:
    """Whether a failure record's ``error`` says its cell never began (resume runs it again:
    it says nothing of the cell, only of the machine or cluster at the time)."""
    return isinstance(error, str) and error.startswith(NEVER_BEGAN)


def never_attacked(status: object, error: object) -> bool:
    """Whether a failed cell stopped before its attack saw an update: in its setup stage
    (``setup: …``: a stage that raised, :meth:`bench.pipeline._Run.guard`, or a task that
    timed out or whose worker died there, :func:`in_stage`) or a task no worker began (an
    ``error`` or ``timeout``). It measured nothing of the attack or the defense."""
    if status not in ("error", "timeout") or not isinstance(error, str):
        return False
    return error.startswith(f"{SETUP}: ") or never_began(error)
