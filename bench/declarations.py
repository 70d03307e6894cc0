"""What a component declares about itself, checked where it is registered.

A plug-in's declaration that no suite could satisfy (an update kind that does not exist, a
name a suite cannot write) had every cell skipped or refused with a
message that blamed the suite. It is now refused when the module registers the component: the
plug-in fails to load, in one line naming it (:func:`bench.registry.import_components`).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
MODALITIES = frozenset({"image", "text"})  # the data a cell's dataset holds
UPDATE_KINDS = frozenset({"gradient", "delta"})  # what a FedSGD / FedAvg client shares
LEVELS = ("none", "data", "update", "protocol")  # where a defense acts (contracts.Defense)


def declaration_problem(kind: str, name: str, cls: Any) -> str | None:
    """Why ``cls``, registered as ``name`` in the ``kind`` registry, declares what no suite
    could use; None when it declares nothing wrong."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        return (f"the name {name!r} is not one a suite can write (letters, digits, '_', '.', "
                "'+' or '-', starting with a letter or digit, at most 64)")
    if kind == "defense" and ("+" in name or name == "chain"):  # a chain's label joins its
        return (f"the name {name!r} is not one a defense can take: '+' joins a chain's "  # links
                "labels, and 'chain' is a suite's keyword")
    sets = {"modalities": MODALITIES, "update_kinds": UPDATE_KINDS,
            "batched_trials": MODALITIES}  # an attack's needs/wants: checked against the
    # grants when a suite names it (bench.suite.match), since a grant may be added at run time
    for attr, known in sets.items():
        value = getattr(cls, attr, None)
        if value is None or (attr != "modalities" and kind != "attack"):
            continue
        if attr == "batched_trials":  # read as the runner reads it: a flag, one name, a set
            value = {value} if isinstance(value, str) else value if isinstance(
                value, Collection) else ()
        if not _names(value):
            return f"{attr} must be a set of names, got {value!r}"
        unknown = sorted(set(value) - known)
        if unknown:
            return (f"{attr} names {', '.join(map(repr, unknown))}, not one of "
                    f"{', '.join(sorted(known))}")
    for attr in ("needs", "wants") if kind == "attack" else ():  # their names: when a suite
        value = getattr(cls, attr, frozenset())  # names the attack (grants may be added)
        if not _names(value):
            return f"{attr} must be a set of capability names, got {value!r}"
    if kind == "defense" and getattr(cls, "level", "update") not in LEVELS:
        return f"level must be one of {', '.join(LEVELS)}, got {cls.level!r}"
    required = ("modalities", "update_kinds") if kind == "attack" else ("modalities",)
    for attr in required:
        if getattr(cls, attr, None) is not None and not getattr(cls, attr):
            return f"{attr} is empty: no cell could ever run it"
    return None


def _names(value: Any) -> bool:
    """Whether ``value`` is a collection of names (not one name: a str is a collection of
    letters)."""
    return (not isinstance(value, str) and isinstance(value, Collection)
            and all(isinstance(v, str) for v in value))
