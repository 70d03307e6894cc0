"""The component axes of a suite: entries, parameter grids and defense chains expanded into
validated :class:`~bench.identity.Spec`s, each problem a :class:`SuiteError` naming its key."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any

from bench.identity import Spec, digest
from bench.registry import (
    DEFENSES,
    LeakbenchError,
    PluginError,
    Registry,
    short,
    validate_params,
)
from bench.suite.limits import MAX_AXIS_VALUES
from bench.suite.schema import SuiteError

MAX_GRID = MAX_AXIS_VALUES
"""Combinations one grid entry (a component's parameter lists, a chain) may expand into."""


def grid(params: dict[str, Any], where: str) -> Iterator[dict[str, Any]]:
    """Expand a parameter mapping whose list values are grids into every combination."""
    keys = sorted(params, key=lambda k: (not isinstance(k, str), str(k)))
    axes = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    for k, axis in zip(keys, axes):
        if not axis:
            raise SuiteError(f"{where}.{k}: an empty list (a grid needs at least one value)")
    _check_grid_size([len(a) for a in axes], where)
    for combo in itertools.product(*axes):
        yield dict(zip(keys, combo))


def _check_grid_size(lengths: list[int], where: str) -> None:
    size = math.prod(lengths)
    if size > MAX_GRID:
        raise SuiteError(f"{where}: a grid of {size} combinations, above the limit of "
                         f"{MAX_GRID} per entry")


def _items(value: Any, key: str) -> list[tuple[str, dict[str, Any]]]:
    """Normalise a component list: ``name``, ``{name: {params}}`` or ``{name: null}``."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise SuiteError(f"{key}: expected a non-empty list of component names")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            out.append((item, {}))
        elif isinstance(item, dict) and len(item) == 1:
            name, params = next(iter(item.items()))
            if params is None:
                params = {}
            if not isinstance(params, dict) and name != "chain":  # a chain's list: defense_axis
                shown = name if isinstance(name, str) and name.isprintable() else short(name)
                raise SuiteError(f"{key}[{i}].{shown}: expected a mapping of parameters, "
                                 f"got {short(params)}")  # a newline in the name: two lines
            out.append((str(name), params))
        else:
            raise SuiteError(f"{key}[{i}]: expected a name or a one-key mapping, got {short(item)}")
    return out


def _expand_component(name: str, params: dict[str, Any], registry: Registry, where: str
                      ) -> list[Spec]:
    entry = registry.get(name)
    try:
        specs = []
        for combo in grid(params, where):
            validated = validate_params(entry.params, combo, where)
            problem = entry.cls.check_params(validated) if hasattr(entry.cls, "check_params") \
                else None
            if problem:
                raise SuiteError(f"{where}: {problem}")
            specs.append(Spec(name, tuple(sorted(validated.items())), registry.kind + "s",
                              tuple(sorted(params))))
        return specs
    except LeakbenchError as e:
        raise SuiteError(str(e)) from None


def component_axis(value: Any, registry: Registry, key: str) -> list[Spec]:
    specs: list[Spec] = []
    for i, (name, params) in enumerate(_items(value, key)):
        try:
            registry.get(name)
        except PluginError:  # an installed plug-in is broken, not this suite's entry
            raise
        except LeakbenchError as e:
            raise SuiteError(f"{key}[{i}]: {e}") from None
        where = f"{key}[{i}].{name}"
        specs += no_repeats(_expand_component(name, params, registry, where), where,
                            lambda spec: spec.label, " in its grid",
                            "; values that validate alike, e.g. 1 and 1.0, are one")
    return one_per_identity(unique(specs), key, lambda spec: (spec,))


def one_per_identity(items: list, key: str, specs_of: Callable[[Any], tuple[Spec, ...]]
                     ) -> list:
    """``items`` unchanged; a SuiteError when two of them differ only in parameters outside
    the identity (``Param(identity=False)``, e.g. ``snapshots``): their cells would share
    ids, and one cell's record would overwrite the other's."""
    seen: dict[str, tuple[Spec, ...]] = {}
    for item in items:
        specs = specs_of(item)
        other = seen.setdefault(digest([s.as_dict() for s in specs]), specs)
        if other == specs:
            continue
        for mine, theirs in zip(specs, other):
            differ = sorted(k for k, v in mine.params if dict(theirs.params).get(k) != v)
            if differ:
                raise SuiteError(
                    f"{key}: two {mine.name} entries differ only in {', '.join(differ)}, "
                    f"which {'does' if len(differ) == 1 else 'do'} not change a cell's "
                    f"identity: their cells would share ids; give one value")
    return items


def no_repeats(values: list, key: str, label: Callable[[Any], str] = short, within: str = "",
               hint: str = "") -> list:
    """``values`` unchanged; a SuiteError naming the first value that appears twice (the cells
    would repeat): seeds, batch sizes, victims, or the points of one entry's grid. Separate
    entries that overlap (or repeat, e.g. through a YAML alias) are merged instead: the axis
    is the union of its entries."""
    seen: set = set()
    for v in values:
        if v in seen:
            raise SuiteError(f"{key}: {label(v)} appears twice{within} (the cells would "
                             f"repeat{hint})")
        seen.add(v)
    return values


def defense_axis(value: Any) -> list[tuple[Spec, ...]]:
    chains: list[tuple[Spec, ...]] = []
    for i, (name, params) in enumerate(_items(value, "defenses")):
        if name == "chain":
            if not isinstance(params, list) or not params:
                got = "an empty list" if params == [] else short(params)
                raise SuiteError(f"defenses[{i}].chain: expected a non-empty list of defenses, "
                                 f"got {got}")
            links = [component_axis([item], DEFENSES, f"defenses[{i}].chain[{j}]")
                     for j, item in enumerate(params)]
            _check_grid_size([len(link) for link in links], f"defenses[{i}].chain")
            # a `none` link does nothing: [none, none] is `none`, [noise, none] is noise (each
            # had been a cell of its own beside the one it equals)
            expanded = [tuple(s for s in c if s.name != "none") or (c[0],)
                        for c in itertools.product(*links)]
            for chain in expanded:
                _check_chain_order(chain, f"defenses[{i}].chain")
            chains += expanded
        else:
            chains += [(s,) for s in component_axis([{name: params}], DEFENSES,
                                                 f"defenses[{i}]")]
    chains = one_per_identity(unique(chains), "defenses", lambda chain: chain)
    _no_reordered_twins(chains)
    return chains


def _no_reordered_twins(chains: list[tuple[Spec, ...]]) -> None:
    """A SuiteError where two chains run the same procedure in a different order: every batch
    transform (a data-level link) runs before the update wherever it stands, so
    [prune, mixup] is [mixup, prune]. Their labels differ, and so would their defense seeds:
    one defense would make two rows of the table, each half its seeds'."""
    seen: dict[tuple, tuple[Spec, ...]] = {}
    for chain in chains:
        data = [s for s in chain if DEFENSES.get(s.name).cls.level == "data"]
        key = (tuple(data), tuple(s for s in chain if s not in data))
        other = seen.setdefault(key, chain)
        if other != chain:
            names = ["+".join(s.name for s in c) for c in (other, chain)]
            raise SuiteError(f"defenses: {names[0]} and {names[1]} run the same procedure "
                             f"(a data-level link transforms the batch before the update, "
                             f"wherever it stands in a chain); give one of them")


def _check_chain_order(chain: tuple[Spec, ...], where: str) -> None:
    """A link that rebuilds the update from the batch (DP-SGD) would silently discard the
    update- and protocol-level links before it; only data-level links may precede it. One
    protocol-level link at most: a second aggregate of an aggregate is not simulated. No
    link that reads the client's batch after a protocol-level one: it would act on the
    aggregate from one client's data, which no party holds beside the aggregate; nor an
    update-level one that no protocol can run on the aggregate (any but noise): the server,
    the attacker, would hold the sum before it. A defense
    once: a record keeps one ``defense_info`` entry per name (``mixup_coefficients``…), so a
    second link's would overwrite the first's."""
    classes = [DEFENSES.get(s.name).cls for s in chain]
    protocol = [k for k, cls in enumerate(classes) if cls.level == "protocol"]
    if len(protocol) > 1:
        raise SuiteError(f"{where}: at most one protocol-level link, got "
                         f"{', '.join(chain[k].name for k in protocol)}")
    if protocol:
        first = chain[protocol[0]].name
        blind = [s.name for s, cls in zip(chain[protocol[0] + 1:], classes[protocol[0] + 1:])
                 if cls.reads_batch]
        if blind:
            raise SuiteError(f"{where}: {', '.join(blind)} reads the client's batch, but after "
                             f"{first} the update is an aggregate of batches it never "
                             f"saw; put {', '.join(blind)} before {first}")
        outside = [s.name for s, cls in zip(chain[protocol[0] + 1:], classes[protocol[0] + 1:])
                   if cls.level == "update" and not (cls.in_aggregate or cls.recomputes_update)]
        if outside:  # the server is the attacker: it holds the aggregate before them
            raise SuiteError(f"{where}: {', '.join(outside)} after {first} would act on the "
                             f"aggregate, which only the server (the attacker) holds, so it "
                             f"protects nothing; put {', '.join(outside)} before {first} "
                             f"(each client's own update)")
    names = [s.name for s in chain]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise SuiteError(f"{where}: {', '.join(twice)} appears twice in one chain; a record "
                         f"keeps one link's info per defense, so give each defense once")
    for k, spec in enumerate(chain):
        if not classes[k].recomputes_update:
            continue
        lost = [s.name for s, cls in zip(chain[:k], classes[:k])
                if cls.level not in ("data", "none")]
        if lost:
            raise SuiteError(f"{where}: {spec.name} recomputes the update from the batch, so "
                             f"{', '.join(lost)} before it would be discarded; put {spec.name} "
                             f"before them")


def unique(items: list, key: Callable[[Any], Any] = lambda item: item) -> list:
    """``items`` without repeats (by ``key``), in first-seen order."""
    seen, out = set(), []
    for it in items:
        k = key(it)
        if k not in seen:
            seen.add(k)
            out.append(it)
    return out
