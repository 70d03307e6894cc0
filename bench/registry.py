"""Registries of attacks, defenses, architectures and datasets.

One registry per kind. A component is a class registered with a decorator
(``@register_attack("dlg")``) that declares its parameters as a tuple of
:class:`Param`. Parameters are validated once, when a suite is loaded, with an
error that names the suite key. Other installed packages add components through
the entry-point groups ``leakbench.attacks``, ``leakbench.defenses``,
``leakbench.archs`` and ``leakbench.datasets``: loading the entry point is
enough, because the decorator registers the class on import.
"""

from __future__ import annotations

import difflib
import importlib
import math
import multiprocessing
import os
import pkgutil
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, TypeVar

from bench.declarations import declaration_problem
from bench.plugin_frames import plugin_frame


class LeakbenchError(Exception):
    """A user-facing error: one line, no traceback, exit status 2 from the CLI."""


class UnknownComponentError(LeakbenchError):
    pass


class ParamError(LeakbenchError):
    pass


class PluginError(LeakbenchError):
    """An installed package's leakbench entry point does not import."""


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def one_line(text: str) -> str:
    """``text`` with its ASCII control characters escaped (a path holding a newline split an
    error or a warning in two lines)."""
    return "".join(repr(c)[1:-1] if ord(c) < 32 or ord(c) == 127 else c for c in text)


def has_control(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character (a line break, a tab, DEL, …),
    which would break a line or a table row it is printed in."""
    return any(ord(c) < 32 or 127 <= ord(c) <= 159 for c in text)


def warn(message: str) -> None:
    """A user-facing warning: one line on stderr, ``leakbench: warning: …``."""
    print(f"leakbench: warning: {one_line(message)}", file=sys.stderr)


_MISSING = object()

_NUMBER_TEXT = re.compile(r"[+-]?([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
                          r"|[+-]?(nan|inf|infinity)", re.IGNORECASE)  # linear: no nested runs


def number_from_text(text: str) -> float | None:
    """The number a YAML scalar that YAML 1.1 left as text spells (``1e-3``, ``.5``,
    ``-inf``), or None. Only plain ASCII numerals: Python's ``float`` also takes other
    scripts' digits (``'٣'``), padding and underscores in quoted text (``'1_0'``: 10), none of
    which reads as the number it becomes."""
    return float(text) if _NUMBER_TEXT.fullmatch(text) else None


PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
PARAM_TYPES = (int, float, str, bool)
"""The types a component's parameter may declare: what a suite's YAML scalars give."""


@dataclass(frozen=True)
class Param:
    """One declared parameter of a component: name, type, default and allowed range."""

    name: str
    type: type
    default: Any = _MISSING
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    nullable: bool = False
    # True: part of every cell's identity. False: where/how to load (a data root) or what is
    # kept beside the result, not what is measured. "non-default": only when set to another
    # value than its default — for a parameter added later whose default keeps the old
    # behaviour, so that existing cells keep their ids
    identity: bool | str = True
    # True: a file or folder. A relative one is made absolute against the directory the suite
    # is read in, so that a worker started elsewhere (a Ray node, or a `ray start` run from
    # another folder) reads the folder the driver checked; `~` stays each machine's home
    path: bool = False

    def __post_init__(self) -> None:
        """A declaration a suite could never use is refused where it is written (a plug-in's
        module then fails to load, in one line): ``list`` values crashed the suite's
        grid expansion (unhashable), and a default outside its own range or choices was
        reported as the user's suite error."""
        if not (isinstance(self.name, str) and PARAM_NAME.fullmatch(self.name)):
            raise TypeError(f"Param {self.name!r}: the name must be letters, digits, '_' or '-', "
                            "starting with a letter or '_'")
        if self.path and self.type is not str:
            raise TypeError(f"Param {self.name!r}: path=True needs type str")
        if self.type not in PARAM_TYPES:
            raise TypeError(f"Param {self.name!r}: type {getattr(self.type, '__name__', self.type)}"
                            " is not one a suite can give (int, float, str or bool; a list is "
                            "read as a grid of values)")
        if self.default is not _MISSING and not (self.default is None and self.nullable):
            try:
                self.validate(self.default, f"Param {self.name!r}: its default")
            except ParamError as e:
                hint = " (declare nullable=True)" if self.default is None else ""
                raise TypeError(f"{e}{hint}") from None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def describe(self) -> str:
        parts = [f"{self.name}: {self.type.__name__}"]
        if not self.required:
            parts.append(f"= {self.default!r}")
        if self.choices is not None:
            parts.append("in {" + ", ".join(map(str, self.choices)) + "}")
        if self.low is not None or self.high is not None:
            lo = "-inf" if self.low is None else f"{self.low:g}"
            hi = "inf" if self.high is None else f"{self.high:g}"
            parts.append(f"in [{lo}, {hi}]")
        if self.help:
            parts.append(f"— {self.help}")
        return " ".join(parts)

    def validate(self, value: Any, where: str) -> Any:
        """Return ``value`` coerced to the declared type, or raise ParamError naming ``where``."""
        if value is None and self.nullable:
            return None
        expected = self.type
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ParamError(f"{where}: {short(value)} is too large for a float") from None
        if expected is float and isinstance(value, str):  # YAML 1.1 reads "1e-3" as text
            number = number_from_text(value)
            value = value if number is None else number
        if expected is float and isinstance(value, float) and not math.isfinite(value):
            raise ParamError(f"{where}: expected a finite number, got {short(value)}")
        if expected is bool and not isinstance(value, bool):
            raise ParamError(f"{where}: expected a boolean, got {short(value)}")
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            number = number_from_text(value) if isinstance(value, str) else None
            hint = (f" (write {int(number)})" if number is not None and math.isfinite(number)
                    and number == int(number) and abs(number) < 2 ** 53 else "")  # exact
            raise ParamError(f"{where}: expected an integer, got {short(value)}{hint}")
        if not isinstance(value, expected):
            raise ParamError(f"{where}: expected {expected.__name__}, got {short(value)}")
        if isinstance(value, str) and has_control(value):
            # it enters the cell's label, which the tables print and the record check refuses
            raise ParamError(f"{where}: {one_line(repr(value))} holds a control character")
        if self.choices is not None and value not in self.choices:
            allowed = ", ".join(map(str, self.choices))
            raise ParamError(f"{where}: {short(value)} is not one of {{{allowed}}}")
        if self.low is not None and value < self.low:
            raise ParamError(f"{where}: {short(value)} is below the minimum {self.low:g}")
        if self.high is not None and value > self.high:
            raise ParamError(f"{where}: {short(value)} is above the maximum {self.high:g}")
        if self.path and value and not value.startswith("~") and not os.path.isabs(value):
            value = os.path.abspath(value)
        return value


def validate_params(
    params: Iterable[Param], given: Mapping[str, Any] | None, where: str
) -> dict[str, Any]:
    """Fill defaults and validate ``given`` against the declared ``params``."""
    declared = {p.name: p for p in params}
    given = dict(given or {})
    unknown = sorted((k for k in given if k not in declared), key=repr)
    if unknown:
        hint = suggest(str(unknown[0]), declared)
        raise ParamError(f"{where}: unknown parameter {unknown[0]!r}{hint}")
    out: dict[str, Any] = {}
    for name, p in declared.items():
        if name in given:
            out[name] = p.validate(given[name], f"{where}.{name}")
        elif p.required:
            raise ParamError(f"{where}: missing required parameter {name!r}")
        else:
            out[name] = p.default
    return out


def suggest(name: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""


@dataclass
class Entry:
    name: str
    cls: type
    kind: str

    @property
    def params(self) -> tuple[Param, ...]:
        return tuple(getattr(self.cls, "params", ()))

    @property
    def description(self) -> str:
        return doc_summary(self.cls.__doc__)


def doc_summary(doc: str | None) -> str:
    """A docstring's first paragraph on one line (its first line alone had cut sentences
    off mid-way: "…of standard deviation `scale` or")."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


C = TypeVar("C", bound=type)


@dataclass
class Registry:
    """Name → component class for one kind, filled by decorators and entry points."""

    kind: str
    builtin_packages: tuple[str, ...]
    entry_point_group: str
    _entries: dict[str, Entry] = field(default_factory=dict)
    _loaded: bool = False

    def register(self, name: str) -> Callable[[C], C]:
        def deco(cls: C) -> C:
            if name in self._entries and self._entries[name].cls is not cls:
                existing = self._entries[name].cls
                same = (existing.__module__, existing.__qualname__) == (
                    cls.__module__, cls.__qualname__)
                if not same:
                    raise ValueError(f"{self.kind} {name!r} is registered twice: by "
                                     f"{_defined_in(existing)} and by {_defined_in(cls)}")
            problem = declaration_problem(self.kind, name, cls)
            if problem:
                raise TypeError(f"{self.kind} {name!r}: {problem}")
            cls.registry_name = name
            self._entries[name] = Entry(name, cls, self.kind)
            return cls

        return deco

    def load(self) -> None:
        """Import the built-in components and the entry points of installed packages. Loaded
        once every import succeeded: after a failure the next use imports again and raises
        the same error, never a half-filled registry's "unknown component"."""
        if self._loaded:
            return
        import_components(self.builtin_packages, self.entry_point_group,
                          lambda: len(self._entries), self.kind)
        self._loaded = True

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests and notebooks that register a component for a while)."""
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        self.load()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self.load()
        return [self._entries[n] for n in sorted(self._entries)]

    def get(self, name: str) -> Entry:
        self.load()
        if not isinstance(name, str) or name not in self._entries:
            hint = suggest(str(name), self._entries)
            raise UnknownComponentError(f"unknown {self.kind} {name!r}{hint}")
        return self._entries[name]

    def __contains__(self, name: str) -> bool:
        self.load()
        return name in self._entries


def import_components(packages: Iterable[str], entry_point_group: str,
                      count: Callable[[], int] | None = None, what: str = "component") -> None:
    """Import every public module of ``packages`` (each registers its components) and load
    the ``entry_point_group`` entry points of installed packages. ``count``: how many
    components are registered, to warn where a plug-in's module registered none (a class
    without its ``@register_…`` decorator: the suite then only said "unknown …")."""
    for pkg_name in packages:
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if not mod.name.startswith("_"):
                try:
                    importlib.import_module(f"{pkg_name}.{mod.name}")
                except (Exception, SystemExit) as e:  # a component file dropped into the
                    # package (the README's first route), as an entry point's: one line
                    name = f"{pkg_name}.{mod.name}"
                    raise PluginError(f"component module {name} failed to load: "
                                      f"{load_failure(e, name)}") from e
    for ep in entry_points(group=entry_point_group):
        dist = f" (package {ep.dist.name})" if getattr(ep, "dist", None) else ""
        where = f"plug-in {ep.name} = {ep.value}{dist}, entry-point group {entry_point_group}"
        fresh = ep.module not in sys.modules  # a module two entry points share registers once
        before = count() if count is not None else 0
        try:
            ep.load()
        except (Exception, SystemExit) as e:  # a plug-in's own bug or typo (or its
            # sys.exit, which had ended every command silently): name it, not a traceback
            raise PluginError(f"{where}, failed to load: {load_failure(e, ep.module)}") from e
        if count is not None and fresh and count() == before and \
                multiprocessing.parent_process() is None:  # the driver's, not each worker's
            warn(f"{where}: loaded, but registered no {what} (a class without its "
                 f"@register_{what} decorator?)")


def load_failure(e: BaseException, module: str) -> str:
    """What went wrong loading the component module ``module`` and where in it: its message
    (a leakbench refusal as it is, another error with its type, a ``sys.exit``), then the
    file and line."""
    detail = (str(e) if isinstance(e, LeakbenchError)
              else f"it called sys.exit({e.code!r})" if isinstance(e, SystemExit)
              else f"{type(e).__name__}: {e}")
    if isinstance(e, SyntaxError) and e.filename:
        return f"{detail} ({e.filename}:{e.lineno})"
    frame = plugin_frame(e, module)
    return f"{detail} ({frame.filename}:{frame.lineno})" if frame is not None else detail


def _defined_in(cls: type) -> str:
    """``cls``'s class name and file, for a clash of two components' names."""
    where = getattr(sys.modules.get(cls.__module__), "__file__", None) or cls.__module__
    return f"{cls.__qualname__} ({where})"


ATTACKS = Registry("attack", ("attacks",), "leakbench.attacks")
DEFENSES = Registry("defense", ("defenses",), "leakbench.defenses")
ARCHS = Registry("arch", ("bench.archs",), "leakbench.archs")
DATASETS = Registry("dataset", ("bench.datasets",), "leakbench.datasets")
SAMPLERS = Registry("sampler", ("bench.samplers",), "leakbench.samplers")

REGISTRIES: dict[str, Registry] = {
    "attacks": ATTACKS,
    "defenses": DEFENSES,
    "archs": ARCHS,
    "datasets": DATASETS,
    "samplers": SAMPLERS,
}

register_attack = ATTACKS.register
register_defense = DEFENSES.register
register_arch = ARCHS.register
register_dataset = DATASETS.register
register_sampler = SAMPLERS.register


class Component:
    """Base of every registered component: validated parameters as attributes."""

    params: tuple[Param, ...] = ()
    registry_name: str = ""

    def __init__(self, **kwargs: Any) -> None:
        where = self.registry_name or type(self).__name__
        self.config = validate_params(self.params, kwargs, where)
        problem = self.check_params(self.config)
        if problem:
            raise ParamError(f"{where}: {problem}")
        for k, v in self.config.items():
            setattr(self, k, v)

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        """A rule between validated parameters that no single :class:`Param` can state; the
        problem in words, or None. Checked when a suite loads and when the component is built."""
        return None
