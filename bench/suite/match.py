"""Which cells a suite keeps as skipped records (a component declares the combination
incompatible): one compatibility check for every cell kind. ``exclude`` rules are applied as
bit masks during expansion (:mod:`bench.suite.expand`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from bench.contracts import Attack, CellContext, modality_mismatch
from bench.grants import GRANTS, PUBLIC_DATA
from bench.identity import chain_label
from bench.registry import ATTACKS, DATASETS, LeakbenchError
from bench.returns import meta_device_probe

_CONTEXT_CACHE: dict[Any, CellContext] = {}
_REASON_CACHE: dict[Any, str | None] = {}  # (context key, component spec) → reason
_OBSERVED_CACHE: dict[Any, CellContext] = {}  # (context key, chain) → the attack's context


def _context_key(cell: Any) -> tuple[Any, ...]:
    return (type(cell).__name__, cell.arch, cell.dataset, getattr(cell, "batch_size", None),
            getattr(cell, "client", None), getattr(cell, "granted", None),
            getattr(cell, "config", None), getattr(cell, "victim", None))


@contextlib.contextmanager
def _naming(kind: str, label: str) -> Iterator[None]:
    """A component's own code raising (a plug-in's constructor, its ``incompatibility``) as
    one line naming the component: it had reached the user as a traceback, before any cell."""
    try:
        yield
    except LeakbenchError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - a plug-in's code may raise
        # anything, or call sys.exit (which had ended the command in silence)
        said = f"sys.exit({e.code!r})" if isinstance(e, SystemExit) else str(e).strip()
        text = said.splitlines()
        raise LeakbenchError(f"{kind} {label} raised {type(e).__name__}"
                             f"{': ' + text[0][:300] if text else ''} while the suite was "
                             "checked (its constructor or its compatibility check)") from e


def _context(cell: Any) -> CellContext:
    key = _context_key(cell)
    if key not in _CONTEXT_CACHE:
        with _naming("dataset", cell.dataset.label):
            _CONTEXT_CACHE[key] = cell.context()
    return _CONTEXT_CACHE[key]


def _observed(cell: Any, key: tuple[Any, ...]) -> CellContext:
    """The context the server observes through the cell's chain: one per context and chain,
    shared by every attack of a grid (built links and all)."""
    chain = tuple(cell.defense)
    if (key, chain) not in _OBSERVED_CACHE:
        context, built = _context(cell), []
        for d in chain:
            with _naming("defense", d.label):
                built.append(d.build())
        with _naming("defense", chain_label(chain)):  # each link's observed batch
            _OBSERVED_CACHE[key, chain] = context.observed_through(built)
    return _OBSERVED_CACHE[key, chain]


def _checked(cell: Any) -> list[tuple[str, Any]]:
    """(message prefix, component spec) of what is checked: the attack, then each link."""
    attack = getattr(cell, "attack", None)
    return [*([("", attack)] if attack is not None else []),
            *((f"{d.name}: ", d) for d in cell.defense)]


def _build_problem(arch: Any, meta: Any, label: str) -> str | None:
    """Why no model of ``arch`` builds for ``meta``'s data, or None
    (:func:`bench.returns.meta_device_probe`), so that the cells are skipped with the reason
    rather than run into error records, or the suite refused in another component's name.
    Logits of the wrong shape or kind (a tuple, the wrong number of classes, detached)
    refuse the suite in the arch's name: they had ended in torch's errors naming no
    component, or in ok cells."""
    reason, problem = meta_device_probe(arch, meta)
    if problem:
        raise LeakbenchError(f"arch {label}: {problem}")
    return reason


def incompatibility(cell: Any, suite_grants: frozenset[str]) -> str | None:
    """Why the cell cannot run, or None: a capability the suite does not grant, then each
    component's own check (the attack's first, then each defense link's, prefixed by name).

    Defenses check the client's context; the attack checks the context the server observes
    after the chain (on a K-client secure aggregate: K·B samples, K clients). Every component
    declares the data it works on (``modalities``: image, text); the architecture is checked
    first. An answer is cached per cell context (and, for the attack, per chain): it never
    depends on the seed."""
    key = _context_key(cell)
    if (key, "arch") not in _REASON_CACHE:
        context = _context(cell)
        with _naming("arch", cell.arch.label):
            arch = cell.arch.build()
            _REASON_CACHE[key, "arch"] = modality_mismatch(arch, arch.modalities,
                                                           context.modality) or (
                None if context.meta is None else _build_problem(arch, context.meta,
                                                                 cell.arch.label))
    if _REASON_CACHE[key, "arch"]:
        return _REASON_CACHE[key, "arch"]
    attack = getattr(cell, "attack", None)
    overlap = getattr(DATASETS.get(cell.dataset.name).cls, "no_public_split", None)
    if attack is not None:
        cls = ATTACKS.get(attack.name).cls
        needs = set(cls.needs)
        unknown = sorted((needs | set(cls.wants)) - set(GRANTS))  # a plug-in's typo, not
        if unknown:  # the suite's: "needs labelz, which the suite does not grant" misled
            raise LeakbenchError(f"attack {attack.name} declares needs/wants "
                                 f"{', '.join(map(repr, unknown))}, which no grant provides "
                                 f"(grants: {', '.join(sorted(GRANTS))})")
        missing = sorted(needs - suite_grants)
        if missing:
            return f"{attack.name} needs {', '.join(missing)}, which the suite does not grant"
        if PUBLIC_DATA in needs and overlap:
            return f"{attack.name} needs public_data, and {cell.dataset.name} has none: {overlap}"
    elif overlap:  # the utility track scores accuracy on the test split: it must be held out
        return f"utility needs a held-out test split, and {cell.dataset.name} has none: {overlap}"
    for prefix, spec in _checked(cell):
        cache_key = (key, spec, tuple(cell.defense) if spec is attack else None)
        if cache_key not in _REASON_CACHE:
            seen = _observed(cell, key) if spec is attack else _context(cell)
            with _naming("attack" if spec is attack else "defense", spec.label):
                component = spec.build()
                if isinstance(component, Attack):
                    _REASON_CACHE[cache_key] = component.skip_reason(seen)
                else:
                    _REASON_CACHE[cache_key] = (
                        modality_mismatch(component, component.modalities, seen.modality)
                        or component.incompatibility(seen))
        reason = _REASON_CACHE[cache_key]
        if reason:
            return f"{prefix}{reason}"
    return None
