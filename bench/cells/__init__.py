"""Cell kinds: units of work with one protocol (identity, JSON, run → outcome).

- :mod:`bench.cells.base`: the protocol, the registry of kinds, the run options;
- :mod:`bench.cells.attack`: an attack against a defended update (its path: :mod:`bench.pipeline`);
- :mod:`bench.cells.utility`: training with defended updates, for the accuracy cost;
- :mod:`bench.cells.trials`: attack cells differing only by seed, as one batched pass.
"""

from bench.cells import attack, trials, utility  # noqa: F401  (registers the kinds)
from bench.cells.base import CELL_KINDS, CellKind, RunOptions, cell_from_json, register_cell_kind

__all__ = ["CELL_KINDS", "CellKind", "RunOptions", "cell_from_json", "register_cell_kind"]
