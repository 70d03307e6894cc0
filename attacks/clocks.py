"""Trial clocks: what each trial of a batched pass cost (issue #12).

The optimisers over trials (:mod:`attacks.batched_lbfgs`, :mod:`attacks.batched_adam`)
evaluate their running trials together, round after round; a trial takes part in rounds
1..n and then stops. Each round's wall time is split evenly among the trials in it (its
``share``), so a trial's clock after round ``e`` is the sum of the shares of the rounds it
took part in up to ``e``, and a trial that stopped early pays nothing for the rounds its
batch-mates ran after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import accumulate


class RoundClock:
    """Each round's share, and what a set of trials had spent by a given round."""

    def __init__(self, shares: Sequence[float]) -> None:
        self._spent = list(accumulate(shares, initial=0.0))  # _spent[e]: rounds 1..e

    def at(self, round_: int, rounds_run: Sequence[int]) -> float:
        """The seconds trials that ran ``rounds_run`` rounds each had spent by ``round_``
        (a cell's restarts, at one of its winner's snapshots or at its stop)."""
        return sum(self._spent[min(round_, n)] for n in rounds_run)
