"""Expansion: a suite's axes → cells, as the cartesian product minus ``exclude`` matches.

Combinations a component declares incompatible stay in the matrix as skipped cells that carry
their reason. Attack cells come first, then the utility track's cells (if the suite has one).
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.cells.attack import AttackCell
from bench.cells.utility import UtilityCell
from bench.registry import ATTACKS
from bench.suite.match import excluded, incompatibility
from bench.suite.schema import Suite


def _keep(cell: Any, suite: Suite) -> Any | None:
    if excluded(cell, suite.exclude):
        return None
    return cell.with_skip(incompatibility(cell, suite.granted))


def attack_cells(suite: Suite) -> list[AttackCell]:
    """The attack cells: dataset × arch × batch × client × victim × defense × attack × seed."""
    cells = []
    budget = tuple(sorted((k, v) for k, v in suite.budget.items() if v is not None))
    for ds, arch, bs, client, victim, defense, attack, seed in itertools.product(
        suite.datasets, suite.archs, suite.batch_sizes, suite.clients, suite.victims,
        suite.defenses, suite.attacks, suite.seeds,
    ):
        entry = ATTACKS.get(attack.name)
        granted = frozenset(entry.cls.needs | entry.cls.wants) & suite.granted
        cell = _keep(AttackCell(suite.name, attack, defense, arch, ds, bs,
                                tuple(sorted(client.items())), victim, seed, suite.base_seed,
                                granted, budget), suite)
        if cell is not None:
            cells.append(cell)
    return cells


def utility_cells(suite: Suite) -> list[UtilityCell]:
    """One utility cell per dataset × arch × defense × seed of a suite with ``utility:``."""
    if not suite.utility:
        return []
    config = tuple(sorted(suite.utility.items()))
    cells = []
    for ds, arch, defense, seed in itertools.product(suite.datasets, suite.archs,
                                                     suite.defenses, suite.seeds):
        cell = _keep(UtilityCell(suite.name, defense, arch, ds, seed, suite.base_seed, config),
                     suite)
        if cell is not None:
            cells.append(cell)
    return cells


def all_cells(suite: Suite) -> list[Any]:
    """Every cell of the matrix: the attack cells, then the utility-track cells."""
    return [*attack_cells(suite), *utility_cells(suite)]
