"""What an attack's cells share, built once before they run (:meth:`Attack.prepare`).

A learned prior (``dmcmc``'s score model) trained inside the first cell had counted as that
cell's attack time, and where its training outlasted the cell's timeout every cell was
killed before it was cached. The runner prepares each attack once per dataset, off the clock;
a preparation that fails is one warning, and the cells then try again and record what fails.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bench.contracts import Attack
from bench.registry import ATTACKS, warn


def prepare_attacks(cells: Iterable[Any], progress: bool = False) -> int:
    """Call ``prepare`` of each distinct attack (with its parameters) on each distinct
    dataset among ``cells``, for attacks that override it; the number prepared."""
    seen: set[str] = set()
    for cell in cells:
        attack = getattr(cell, "attack", None)
        if attack is None or ATTACKS.get(attack.name).cls.prepare is Attack.prepare:
            continue
        key = repr((attack.name, attack.params, cell.dataset.name, cell.dataset.params))
        if key in seen:
            continue
        seen.add(key)
        try:
            attack.build().prepare(cell.dataset.build(), progress)
        except Exception as e:  # noqa: BLE001 - a plug-in's code may raise anything
            warn(f"attack {attack.label} on {cell.dataset.label}: preparing it failed "
                 f"({type(e).__name__}: {str(e).strip()[:300]}); its cells try again and "
                 "record what fails")
    return len(seen)
