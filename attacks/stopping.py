"""Convergence-aware stopping shared by the optimisers over trials (issue #12).

A trial keeps its running best loss, one value per step; it has plateaued once the best has
gained less than ``min_rel_improvement`` (relative) over its last ``patience`` steps. The
budget stays the cap; ``patience`` 0 never stops a trial early.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Plateau:
    """Stop once ``bests[-1-patience] - bests[-1] <= min_rel_improvement · |bests[-1-patience]|``,
    where ``bests[s]`` is the lowest loss up to step ``s``."""

    patience: int = 0
    min_rel_improvement: float = 1e-4

    def stalled(self, bests: Sequence[float]) -> bool:
        """Whether the running bests (one per step, non-increasing) have stopped improving."""
        if self.patience <= 0 or len(bests) <= self.patience:
            return False
        before = bests[-1 - self.patience]
        if not math.isfinite(before):
            return False
        return before - bests[-1] <= self.min_rel_improvement * abs(before)
