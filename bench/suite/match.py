"""Which cells a suite leaves out (``exclude`` rules) and which it keeps as skipped records
(a component declares the combination incompatible): one matcher for every cell kind."""

from __future__ import annotations

from typing import Any

from bench.contracts import CellContext
from bench.registry import ATTACKS


def excluded(cell: Any, rules: list[dict[str, list[Any]]]) -> bool:
    """A rule matches a cell when each of its axes is one of the cell's and shares a value.

    A rule naming an axis a kind does not have (``attack`` for a utility cell) leaves that kind
    alone.
    """
    values = cell.axes()
    return any(set(rule) <= set(values)
               and all(values[axis] & set(allowed) for axis, allowed in rule.items())
               for rule in rules)


_CONTEXT_CACHE: dict[Any, CellContext] = {}
_REASON_CACHE: dict[Any, str | None] = {}  # (context key, component spec) → reason


def _context_key(cell: Any) -> tuple[Any, ...]:
    return (type(cell).__name__, cell.arch, cell.dataset, getattr(cell, "batch_size", None),
            getattr(cell, "client", None), getattr(cell, "granted", None),
            getattr(cell, "config", None))


def _context(cell: Any) -> CellContext:
    key = _context_key(cell)
    if key not in _CONTEXT_CACHE:
        _CONTEXT_CACHE[key] = cell.context()
    return _CONTEXT_CACHE[key]


def _checked(cell: Any) -> list[tuple[str, Any]]:
    """(message prefix, component spec) of what is checked: the attack, then each link."""
    attack = getattr(cell, "attack", None)
    return [*([("", attack)] if attack is not None else []),
            *((f"{d.name}: ", d) for d in cell.defense)]


def incompatibility(cell: Any, suite_grants: frozenset[str]) -> str | None:
    """Why the cell cannot run, or None: a capability the suite does not grant, then each
    component's own check (the attack's first, then each defense link's, prefixed by name).
    A component's answer is cached per cell context (it never depends on victim or seed)."""
    attack = getattr(cell, "attack", None)
    if attack is not None:
        missing = sorted(set(ATTACKS.get(attack.name).cls.needs) - suite_grants)
        if missing:
            return f"{attack.name} needs {', '.join(missing)}, which the suite does not grant"
    key = _context_key(cell)
    for prefix, spec in _checked(cell):
        if (key, spec) not in _REASON_CACHE:
            component = spec.build()
            check = getattr(component, "skip_reason", None) or component.incompatibility
            _REASON_CACHE[key, spec] = check(_context(cell))
        reason = _REASON_CACHE[key, spec]
        if reason:
            return f"{prefix}{reason}"
    return None
