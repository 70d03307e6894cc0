"""A suite file's structural limits, checked before torch or any registry is imported, so that
any file is loaded or refused in well under a second of work beyond the imports.

Two passes, both cheap:

- :func:`scan_yaml` walks the YAML parser's events (libyaml, no Python objects built) and stops
  at the first excess: nesting depth, values once aliases are expanded, items in one list, keys
  in one mapping, characters in one string, an alias that refers to itself;
- :func:`check_axes` sizes each axis of the parsed document as validation would expand it
  (component grids and chains, the clients' grids) and counts the exclude rules.

Every excess is one :class:`~bench.suite.schema.SuiteError` naming the file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import yaml

from bench.suite.schema import SuiteError

MAX_SUITE_BYTES = 1_000_000
"""A suite file larger than this is refused before it is read."""
MAX_SUITE_DEPTH = 64
"""Nesting depth of a suite document (suites need fewer than ten levels)."""
MAX_SUITE_NODES = 20_000
"""Values in a suite document (keys included), counting each use of a YAML alias as a copy."""
MAX_LIST_ITEMS = 10_000
"""Items in one YAML list (an axis, a parameter grid, the exclude rules, a seed list)."""
MAX_MAPPING_KEYS = 1_000
"""Keys in one YAML mapping (a suite has about twenty, a component a dozen parameters)."""
MAX_STRING_CHARS = 10_000
"""Characters in one string (a name, a path, a description)."""
MAX_AXIS_VALUES = 10_000
"""Values of one axis once its grids and chains are expanded: the datasets, archs, defenses,
attacks and clients (each also at most ``MAX_LIST_ITEMS`` entries as written)."""
MAX_EXCLUDE_RULES = 1_000
"""Rules in ``exclude``."""

COMPONENT_AXES = ("datasets", "archs", "defenses", "attacks")


def scan_yaml(text: str, where: str, loader: type) -> None:
    """Walk the parser's events of ``text``; a SuiteError at the first excess. Syntax errors
    are left to the loader, which reports them with their line."""
    events = loader(text)
    try:
        _Scan(where).run(events)
    except yaml.YAMLError:
        return  # invalid YAML: the loader says where
    finally:
        events.dispose()


class _Frame:
    """An open list or mapping: its items so far, the key being read, its anchor."""

    __slots__ = ("is_map", "items", "key", "anchor", "start", "height", "keys")

    def __init__(self, is_map: bool, anchor: str | None, start: int) -> None:
        self.is_map, self.items, self.key = is_map, 0, "?"
        self.anchor, self.start, self.height = anchor, start, 0
        self.keys: set[str] = set()  # a mapping's scalar keys so far


class _Scan:
    def __init__(self, where: str) -> None:
        self.where = where
        self.nodes = 0  # values so far, aliases expanded
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[int, int]] = {}  # anchor → (values, height)
        self.open: set[str] = set()  # anchors of the lists and mappings still open

    def fail(self, message: str, container: bool = False) -> None:
        """A SuiteError naming the key being read (``container``: the open list or mapping)."""
        at = self.path(self.stack[:-1] if container else self.stack)
        raise SuiteError(f"{self.where}: {at + ': ' if at else ''}{message}")

    @staticmethod
    def path(frames: list[_Frame]) -> str:
        """A key as the suite's messages name it: ``attacks[3].dlg.lr``."""
        out = ""
        for frame in frames:
            if frame.is_map:
                out += ("." if out else "") + frame.key
            else:
                out += f"[{max(frame.items - 1, 0)}]"
        return _key_text(out, 100)

    def run(self, events: Any) -> None:
        documents = 0
        while True:
            event = events.get_event()
            kind = type(event)
            if kind is yaml.StreamEndEvent:
                return
            if kind is yaml.DocumentStartEvent:
                documents += 1
                if documents > 1:
                    return  # the loader refuses a second document
                continue
            if kind in (yaml.SequenceEndEvent, yaml.MappingEndEvent):
                self.close()
            elif kind in (yaml.ScalarEvent, yaml.AliasEvent, yaml.SequenceStartEvent,
                          yaml.MappingStartEvent):
                self.node(event, kind)

    def node(self, event: Any, kind: type) -> None:
        parent = self.stack[-1] if self.stack else None
        if parent is not None:
            parent.items += 1
            if parent.is_map:
                if parent.items % 2:  # a key
                    parent.key = (_key_text(event.value) if kind is yaml.ScalarEvent
                                  else "?")
                    if kind is yaml.ScalarEvent and event.value != "<<":
                        if event.value in parent.keys:  # YAML would keep the last silently
                            self.fail(f"the key {_key_text(event.value)!r} appears twice in "
                                      "one mapping", container=True)
                        parent.keys.add(event.value)
                    if parent.items // 2 + 1 > MAX_MAPPING_KEYS:
                        self.fail(f"a mapping of more than {MAX_MAPPING_KEYS} keys",
                                  container=True)
            elif parent.items > MAX_LIST_ITEMS:
                self.fail(f"a list of more than {MAX_LIST_ITEMS} items", container=True)
        depth = len(self.stack)
        if kind is yaml.AliasEvent:
            if event.anchor in self.open:
                self.fail("a YAML alias refers to itself (a recursive structure)")
            values, height = self.anchors.get(event.anchor, (1, 0))
            self.count(values, depth + height)
            if parent is not None:
                parent.height = max(parent.height, height + 1)
            return
        self.count(1, depth)
        if kind is yaml.ScalarEvent:
            if len(event.value) > MAX_STRING_CHARS:
                self.fail(f"a string of {len(event.value)} characters, above the limit of "
                          f"{MAX_STRING_CHARS}")
            if event.anchor:
                self.anchors[event.anchor] = (1, 0)
            if parent is not None:
                parent.height = max(parent.height, 1)
            return
        frame = _Frame(kind is yaml.MappingStartEvent, event.anchor, self.nodes)
        if event.anchor:
            self.open.add(event.anchor)
        self.stack.append(frame)

    def close(self) -> None:
        frame = self.stack.pop()
        if frame.anchor:
            self.open.discard(frame.anchor)
            self.anchors[frame.anchor] = (self.nodes - frame.start + 1, frame.height)
        if self.stack:
            self.stack[-1].height = max(self.stack[-1].height, frame.height + 1)

    def count(self, values: int, depth: int) -> None:
        if depth > MAX_SUITE_DEPTH:
            self.fail(f"nested deeper than {MAX_SUITE_DEPTH} levels")
        self.nodes += values
        if self.nodes > MAX_SUITE_NODES:
            raise SuiteError(f"{self.where}: more than {MAX_SUITE_NODES} values in the document "
                             "(YAML aliases expanded)")


def _key_text(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def check_axes(raw: Any, where: str = "") -> None:
    """Each axis's size as validation would expand it, before anything is validated: at most
    ``MAX_AXIS_VALUES`` per axis, at most ``MAX_EXCLUDE_RULES`` exclude rules. What is
    malformed counts as one value, for validation to report."""
    if not isinstance(raw, dict):
        return
    prefix = f"{where}: " if where else ""
    for key in COMPONENT_AXES:
        if key in raw:
            _check_axis(key, _component_sizes(key, raw[key], prefix), prefix)
    clients = raw.get("client")
    if isinstance(clients, (dict, list)):
        clients = clients if isinstance(clients, list) else [clients]
        _check_axis("client", ((f"client[{i}]", _grid_size(c)) for i, c in enumerate(clients)),
                    prefix)
    exclude = raw.get("exclude")
    if isinstance(exclude, list) and len(exclude) > MAX_EXCLUDE_RULES:
        raise SuiteError(f"{prefix}exclude: {len(exclude)} rules, above the limit of "
                         f"{MAX_EXCLUDE_RULES}")


def _check_axis(key: str, sizes: Iterable[tuple[str, int]], prefix: str) -> None:
    total = 0
    for at, size in sizes:
        _check_grid(size, at, prefix)
        total += size
        if total > MAX_AXIS_VALUES:
            raise SuiteError(f"{prefix}{key}: more than {MAX_AXIS_VALUES} values once grids "
                             f"and chains are expanded (the limit per axis)")


def _check_grid(size: int, at: str, prefix: str) -> None:
    if size > MAX_AXIS_VALUES:
        count = str(size) if size < 10**12 else f"about 10^{int(size.bit_length() * 0.30103)}"
        raise SuiteError(f"{prefix}{at}: a grid of {count} combinations, above the limit of "
                         f"{MAX_AXIS_VALUES} values per axis")


def _component_sizes(key: str, value: Any, prefix: str) -> Iterator[tuple[str, int]]:
    """(where, combinations) of each entry of a component list, as validation reads it."""
    items = [value] if isinstance(value, (str, dict)) else value
    if not isinstance(items, list):
        return
    for i, item in enumerate(items):
        if not (isinstance(item, dict) and len(item) == 1):
            yield f"{key}[{i}]", 1
            continue
        name, params = next(iter(item.items()))
        at = f"{key}[{i}].{_key_text(str(name))}"
        if key == "defenses" and name == "chain" and isinstance(params, list):
            size = 1
            for j, link in enumerate(params):
                link_size = (_grid_size(next(iter(link.values())))
                             if isinstance(link, dict) and len(link) == 1 else 1)
                _check_grid(link_size, f"{at}[{j}]", prefix)
                size *= link_size
            yield at, size
        else:
            yield at, _grid_size(params)


def _grid_size(params: Any) -> int:
    """Combinations of a parameter mapping whose lists are grids."""
    if not isinstance(params, dict):
        return 1
    return math.prod(len(v) for v in params.values() if isinstance(v, list) and v)
