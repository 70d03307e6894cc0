"""Expansion: a suite's axes → cells, as the cartesian product minus ``exclude`` matches.

Combinations a component declares incompatible stay in the matrix as skipped cells that carry
their reason. Attack cells come first, then the utility track's cells (if the suite has one).

Expansion is lazy (:func:`iter_cells` is a generator; memory does not grow with the grid) and
fast: exclude rules are bit masks per axis value, compatibility is cached per scenario block,
and a cell's id is the SHA-256 of its canonical JSON assembled from per-axis fragments (the
same bytes :func:`bench.identity.digest` hashes). :func:`count_cells` sizes the grid from the
axis lengths alone, before anything is expanded.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from bench.cells.attack import AttackCell
from bench.cells.utility import UtilityCell
from bench.registry import ATTACKS, LeakbenchError
from bench.suite.match import incompatibility
from bench.suite.schema import Suite

ATTACK_AXES = ("dataset", "arch", "batch_size", "mode", "victim", "defense", "attack", "seed")
ATTACK_RULE_AXES = (*ATTACK_AXES, "bn_mode")
"""What an attack cell's ``exclude`` rules can name: its axes, and ``bn_mode``, the client's
BatchNorm mode (read from the client axis, so that a rule can pair it with a batch size)."""
UTILITY_AXES = ("dataset", "arch", "defense", "seed")


def _canon(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def axis_values(suite: Suite) -> dict[str, Sequence[Any]]:
    """The attack matrix's axes in expansion order (``mode`` stands for the client axis)."""
    return {"dataset": suite.datasets, "arch": suite.archs, "batch_size": suite.batch_sizes,
            "mode": suite.clients, "victim": suite.victims, "defense": suite.defenses,
            "attack": suite.attacks, "seed": suite.seeds}


def rule_axis_values(suite: Suite) -> dict[str, Sequence[Any]]:
    """The values ``exclude`` rules are matched on: the axes, and the clients again under
    ``bn_mode``."""
    return {**axis_values(suite), "bn_mode": suite.clients}


def axis_match_values(axis: str, value: Any) -> set[Any]:
    """What an exclude rule compares on ``axis`` for one of the suite's values."""
    if axis in ("attack", "arch", "dataset"):
        return {value.name, value.label}
    if axis == "defense":
        return {d.name for d in value} | {"+".join(d.label for d in value)}
    if axis in ("mode", "bn_mode"):
        return {value[axis]}
    return {value}


def _masks(suite: Suite, axes: Sequence[str]) -> dict[str, list[int]]:
    """Per axis (but ``seed``), per value: the bit mask of the exclude rules that value lets
    match. A rule naming an axis the cell kind lacks matches no cell of that kind (mask 0). A
    cell is excluded when the AND of its values' masks is non-zero.

    Linear in values plus rules: a value's mask is the bits of the rules that do not name the
    axis, OR the bits indexed under each name it matches (not each value against each rule)."""
    values = rule_axis_values(suite)
    kept = [(bit, rule) for bit, rule in enumerate(suite.exclude) if set(rule) <= set(axes)]
    masks = {}
    for axis in axes:
        if axis == "seed":
            continue
        free, named = 0, {}
        for bit, rule in kept:
            if axis not in rule:
                free |= 1 << bit
                continue
            for allowed in rule[axis]:
                named[allowed] = named.get(allowed, 0) | 1 << bit
        row = []
        for value in values[axis]:
            mask = free
            if named:
                for have in axis_match_values(axis, value):
                    mask |= named.get(have, 0)
            row.append(mask)
        masks[axis] = row
    return masks


def _seed_mask(suite: Suite, axes: Sequence[str]) -> tuple[int, dict[Any, int]]:
    """The seed axis's masks without a list as long as the axis: the bits of the rules that
    do not name ``seed``, and the extra bits of the seeds a rule names."""
    default, named = 0, {}
    for bit, rule in enumerate(suite.exclude):
        if not set(rule) <= set(axes):
            continue
        if "seed" not in rule:
            default |= 1 << bit
            continue
        for value in rule["seed"]:
            named[value] = named.get(value, 0) | 1 << bit
    return default, named


def count_cells(suite: Suite) -> int:
    """The grid's size from its axis lengths (before ``exclude``): nothing is expanded."""
    attack = math.prod(len(v) for v in axis_values(suite).values())
    utility = (math.prod(len(v) for v in (suite.datasets, suite.archs, suite.defenses,
                                          suite.seeds)) if suite.utility else 0)
    return attack + utility


def _new_cell(cls: type, cell_id: str, **fields: Any) -> Any:
    """A frozen cell built without its dataclass ``__init__`` (the hot loop), id cached."""
    cell = object.__new__(cls)
    cell.__dict__.update(fields, _cell_id=cell_id)
    return cell


def iter_attack_cells(suite: Suite) -> Iterator[AttackCell]:
    """The attack cells, lazily: dataset × arch × batch × client × victim × defense × attack ×
    seed."""
    budget = tuple(sorted((k, v) for k, v in suite.budget.items() if v is not None))
    masks = _masks(suite, ATTACK_RULE_AXES)
    full = (1 << len(suite.exclude)) - 1
    grants = [frozenset(ATTACKS.get(a.name).cls.needs | ATTACKS.get(a.name).cls.wants)
              & suite.granted for a in suite.attacks]
    frag = {"dataset": [_canon(d.as_dict()) for d in suite.datasets],
            "arch": [_canon(a.as_dict()) for a in suite.archs],
            "defense": [_canon([d.as_dict() for d in chain]) for chain in suite.defenses],
            "attack": [_canon(a.as_dict()) for a in suite.attacks],
            "granted": [_canon(sorted(g)) for g in grants]}
    seed_default, seed_named = _seed_mask(suite, ATTACK_RULE_AXES)
    head = f',"base_seed":{_canon(suite.base_seed)},"batch_size":'
    budget_json = _canon(dict(budget))
    for (di, ds), (ai, arch), (bi, bs), (ci, client) in itertools.product(
            enumerate(suite.datasets), enumerate(suite.archs), enumerate(suite.batch_sizes),
            enumerate(suite.clients)):
        m1 = (full & masks["dataset"][di] & masks["arch"][ai] & masks["batch_size"][bi]
              & masks["mode"][ci] & masks["bn_mode"][ci])
        client_t = tuple(sorted(client.items()))
        client_json = _canon(client)
        for vi, victim in enumerate(suite.victims):
            # compatibility within this block and victim (a prior can depend on the victim)
            reasons: dict[tuple[int, int], str | None] = {}
            m2 = m1 & masks["victim"][vi]
            for (fi, defense), (ki, attack) in itertools.product(enumerate(suite.defenses),
                                                                 enumerate(suite.attacks)):
                m3 = m2 & masks["defense"][fi] & masks["attack"][ki]
                prefix = (f'{{"arch":{frag["arch"][ai]},"attack":{frag["attack"][ki]}{head}'
                          f'{bs},"budget":{budget_json},"client":{client_json},'
                          f'"dataset":{frag["dataset"][di]},"defense":{frag["defense"][fi]},'
                          f'"granted":{frag["granted"][ki]},"seed":')
                suffix = f',"victim":{_canon(victim)}}}'
                fields = dict(suite=suite.name, attack=attack, defense=defense, arch=arch,
                              dataset=ds, batch_size=bs, client=client_t, victim=victim,
                              base_seed=suite.base_seed, granted=grants[ki], budget=budget)
                for seed in suite.seeds:
                    if m3 & (seed_default | seed_named.get(seed, 0)):
                        continue
                    if (fi, ki) not in reasons:
                        probe = AttackCell(**fields, seed=seed)
                        reasons[fi, ki] = _incompatibility(probe, suite)
                    cid = hashlib.sha256(f"{prefix}{seed}{suffix}".encode()).hexdigest()[:16]
                    yield _new_cell(AttackCell, cid, **fields, seed=seed,
                                    skip_reason=reasons[fi, ki])


def _incompatibility(cell: Any, suite: Suite) -> str | None:
    """Why ``cell`` is skipped, or None; an error building its components (a dataset's folder
    not found, say) names the suite file first, as every other suite error does."""
    try:
        return incompatibility(cell, suite.granted)
    except LeakbenchError as e:
        e.args = (f"{suite.source or suite.name}: {e}",)
        raise


def iter_utility_cells(suite: Suite) -> Iterator[UtilityCell]:
    """One utility cell per dataset × arch × defense × seed of a suite with ``utility:``."""
    if not suite.utility:
        return
    config = tuple(sorted(suite.utility.items()))
    masks = _masks(suite, UTILITY_AXES)
    seed_default, seed_named = _seed_mask(suite, UTILITY_AXES)
    full = (1 << len(suite.exclude)) - 1
    for (di, ds), (ai, arch), (fi, defense) in itertools.product(
            enumerate(suite.datasets), enumerate(suite.archs), enumerate(suite.defenses)):
        m = full & masks["dataset"][di] & masks["arch"][ai] & masks["defense"][fi]
        reason: list[str | None] = []
        for seed in suite.seeds:
            if m & (seed_default | seed_named.get(seed, 0)):
                continue
            cell = UtilityCell(suite.name, defense, arch, ds, seed, suite.base_seed, config)
            if not reason:
                reason.append(_incompatibility(cell, suite))
            yield cell.with_skip(reason[0])


def iter_cells(suite: Suite) -> Iterator[Any]:
    """Every cell of the matrix, lazily: the attack cells, then the utility-track cells."""
    yield from iter_attack_cells(suite)
    yield from iter_utility_cells(suite)


def attack_cells(suite: Suite) -> list[AttackCell]:
    """The attack cells as a list."""
    return list(iter_attack_cells(suite))


def utility_cells(suite: Suite) -> list[UtilityCell]:
    """The utility cells as a list."""
    return list(iter_utility_cells(suite))


def all_cells(suite: Suite) -> list[Any]:
    """Every cell of the matrix: the attack cells, then the utility-track cells."""
    return list(iter_cells(suite))
