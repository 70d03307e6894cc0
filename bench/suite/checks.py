"""Rules that do nothing: an ``exclude`` rule naming a component the suite does not have is
an error (with a did-you-mean hint); one that matches no cell, and a ``grant`` no attack of the
suite uses, are warnings. Decided from the axes alone, without expanding the grid: every
combination of axis values is a cell, so a rule matches a cell exactly when each of its axes
has a matching value; ``mode`` and ``bn_mode`` are two keys of one client, so a rule naming
both needs one client that has both."""

from __future__ import annotations

from typing import Any

from bench.registry import ATTACKS, short, suggest
from bench.suite.expand import (
    ATTACK_RULE_AXES,
    UTILITY_AXES,
    axis_match_values,
    rule_axis_values,
)
from bench.suite.schema import CLIENT_PARAMS, Suite, SuiteError

COMPONENT_AXES = {"attack": "attacks", "defense": "defenses", "arch": "archs",
                  "dataset": "datasets"}
HINT_CANDIDATES = 200
"""A did-you-mean hint compares with every label of an axis up to this many values, else with
the component names alone (difflib's cost grows with the candidates and their length)."""


def check_rules(suite: Suite) -> list[str]:
    """The suite's warnings; a SuiteError for an exclude naming an absent component."""
    values = rule_axis_values(suite)
    named = {axis for rule in suite.exclude for axis in rule}
    have: dict[str, set[Any]] = {}  # the match values of the axes the rules name (labels cost)
    for axis in ATTACK_RULE_AXES:
        if axis != "seed" and axis in named:
            have[axis] = set().union(*(axis_match_values(axis, v) for v in values[axis]))
    seeds = suite.seeds if isinstance(suite.seeds, range) else set(suite.seeds)
    warnings, idle = [], []
    for i, rule in enumerate(suite.exclude):
        for axis, allowed in rule.items():
            if axis not in COMPONENT_AXES:
                continue
            for name in allowed:
                if name not in have[axis]:
                    raise SuiteError(f"exclude[{i}].{axis}: {short(name)} is not among the "
                                     f"suite's {COMPONENT_AXES[axis]}"
                                     f"{_hint(name, have[axis], values[axis])}")
        if not _matches_any(rule, suite, have, seeds):
            idle.append(f"exclude[{i}] {_show(rule)}")
    if len(idle) == 1:
        warnings.append(f"{idle[0]} matches no cell: it does nothing")
    elif idle:
        more = f" (and {len(idle) - 3} more)" if len(idle) > 3 else ""
        warnings.append(f"{len(idle)} exclude rules match no cell and do nothing: "
                        f"{', '.join(idle[:3])}{more}")
    used = set()
    for spec in suite.attacks:
        cls = ATTACKS.get(spec.name).cls
        used |= set(cls.needs) | set(cls.wants)
    for g in sorted(suite.granted - used):
        warnings.append(f"grant: no attack of the suite needs or uses {g!r}: it does nothing")
    return warnings + _fedsgd_settings(suite.clients)


FEDAVG_ONLY = ("local_epochs", "local_batch_size", "lr")


def _fedsgd_settings(clients: list[dict[str, Any]]) -> list[str]:
    """A FedSGD client shares one gradient of its batch: FedAvg's local schedule and step
    size change nothing in it, but make a cell (and a table row) of their own."""
    default = {p.name: p.default for p in CLIENT_PARAMS}
    return [f"client: {', '.join(f'{k}={c[k]}' for k in set_keys)} with mode fedsgd changes "
            "nothing (FedAvg's local steps; fedsgd shares one gradient) but makes cells of "
            "its own: leave it out of the fedsgd client (an entry of its own), or set mode: fedavg"
            for c in clients if c["mode"] == "fedsgd"
            for set_keys in [[k for k in FEDAVG_ONLY if c[k] != default[k]]] if set_keys]


def _hint(name: Any, have: set[Any], values: Any) -> str:
    """A did-you-mean hint among an axis's labels, or its component names when they are many."""
    candidates = (have if len(have) <= HINT_CANDIDATES
                  else {getattr(v, "name", None) for v in values} - {None})
    return suggest(str(name)[:200], sorted(map(str, candidates)))


def _matches_any(rule: dict[str, list[Any]], suite: Suite, have: dict[str, set[Any]],
                 seeds: range | set[int]) -> bool:
    kinds = [ATTACK_RULE_AXES] + ([UTILITY_AXES] if suite.utility else [])
    for axes in kinds:
        if not set(rule) <= set(axes):
            continue
        if all(_axis_hit(axis, allowed, have, seeds) for axis, allowed in rule.items()) \
                and _client_hit(rule, suite):
            return True
    return False


def _client_hit(rule: dict[str, list[Any]], suite: Suite) -> bool:
    """Whether one client has every client key the rule names (``mode``, ``bn_mode``)."""
    keys = [k for k in ("mode", "bn_mode") if k in rule]
    return len(keys) < 2 or any(all(c[k] in rule[k] for k in keys) for c in suite.clients)


def _axis_hit(axis: str, allowed: list[Any], have: dict[str, set[Any]],
              seeds: range | set[int]) -> bool:
    if axis == "seed":
        return any(_is_seed(a, seeds) for a in allowed)
    return any(a in have[axis] for a in allowed)


def _is_seed(value: Any, seeds: range | set[int]) -> bool:
    """``value in seeds`` (a rule's 1.0 names seed 1) without a range's linear scan of a
    float."""
    if isinstance(seeds, range) and isinstance(value, float):
        return value.is_integer() and int(value) in seeds
    return isinstance(value, (int, float)) and value in seeds


def _show(rule: dict[str, list[Any]]) -> str:
    def text(v: list[Any]) -> str:
        out = str(v[0] if len(v) == 1 else v)
        return out if len(out) <= 60 else out[:57] + "..."

    return "{" + ", ".join(f"{k}: {text(v)}" for k, v in rule.items()) + "}"
