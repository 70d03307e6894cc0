"""Suites: a YAML file (or a built-in name) of axes, validated once and expanded into cells.

Expansion is the cartesian product of the axes, minus the ``exclude`` rules and the
combinations a component declares incompatible (those become skipped cells with
their reason). Every cell has a stable id: a hash of its canonical configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.contracts import CAPABILITIES, CellContext, ClientSpec
from bench.registry import (
    ARCHS,
    ATTACKS,
    DATASETS,
    DEFENSES,
    REGISTRIES,
    LeakbenchError,
    Param,
    Registry,
    _suggest,
    validate_params,
)

SUITES_DIR = Path(__file__).parent / "suites"

SUITE_KEYS = {
    "name": "suite name (defaults to the file name)",
    "description": "one line on what the suite shows",
    "seed": "base seed every cell's seeds derive from",
    "seeds": "number of repetitions (seed indices 0..n-1) or a list of indices",
    "batch_size": "an integer or a list of integers",
    "grant": "capabilities the threat model allows attacks to be given: labels, bn_stats",
    "client": "a client spec or a list of them: mode, local_epochs, local_batch_size, lr, bn_mode",
    "victim": "model states: init (random), trained:N (N SGD steps on the train split)",
    "datasets": "registered dataset names with optional parameter grids",
    "archs": "registered arch names with optional parameter grids",
    "defenses": "registered defense names (or chains) with optional parameter grids",
    "attacks": "registered attack names with optional parameter grids",
    "exclude": "rules of axis: name(s); a matching cell is left out",
    "timeout": "seconds a cell may run before it is recorded as timed out",
    "success_psnr": "a cell succeeds when its mean PSNR reaches this many dB",
    "budget": "caps for every attack: max_iterations, max_grad_evals",
    "utility": "utility track: steps, batch_size, lr, eval_size (train with defended updates)",
    "perceptual": "perceptual metrics: lpips (on/off), lpips_net, lpips_weights (a local path)",
}

CLIENT_PARAMS = (
    Param("mode", str, "fedsgd", choices=("fedsgd", "fedavg")),
    Param("local_epochs", int, 1, low=1, high=1000),
    Param("local_batch_size", int, 0, low=0, high=100_000, help="0: the whole batch per step"),
    Param("lr", float, 0.1, low=0.0),
    Param("bn_mode", str, "train", choices=("train", "eval")),
)
BUDGET_PARAMS = (
    Param("max_iterations", int, None, low=1, nullable=True),
    Param("max_grad_evals", int, None, low=1, nullable=True),
)
PERCEPTUAL_PARAMS = (
    Param("lpips", bool, True, help="score LPIPS when its weights are found locally"),
    Param("lpips_net", str, "alex", choices=("alex", "vgg", "squeeze")),
    Param("lpips_weights", str, None, nullable=True, help="backbone weights file"),
    Param("fid_weights", str, None, nullable=True, help="torch-fidelity inception weights"),
)
EXCLUDE_AXES = ("attack", "defense", "arch", "dataset", "batch_size", "mode", "victim", "seed")
DEFAULT_SUCCESS_PSNR = 20.0


class SuiteError(LeakbenchError):
    pass


@dataclass(frozen=True)
class Spec:
    """A registered component with its validated parameters."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    kind: str = ""  # "attacks" | "defenses" | "archs" | "datasets": for labels only
    shown: tuple[str, ...] = field(default=(), compare=False)  # given in the suite: labelled

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def label(self) -> str:
        """The name, with the parameters that differ from their defaults."""
        declared = self._declared()
        shown = [(k, v) for k, v in self.params
                 if k not in declared or (declared[k].identity and (
                     k in self.shown or declared[k].default != v))]
        if not shown:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={_fmt(v)}" for k, v in shown) + ")"

    def _declared(self) -> dict[str, Param]:
        if self.kind in REGISTRIES and self.name in REGISTRIES[self.kind]:
            return {p.name: p for p in REGISTRIES[self.kind].get(self.name).params}
        return {}

    def as_dict(self) -> dict[str, Any]:
        """The identity: parameters that change results (not, e.g., a local data root)."""
        declared = self._declared()
        return {"name": self.name, "params": {k: v for k, v in self.params
                                              if k not in declared or declared[k].identity}}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.kwargs, "shown": list(self.shown)}


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def chain_label(chain: tuple[Spec, ...]) -> str:
    return "+".join(s.label for s in chain)


@dataclass(frozen=True)
class Cell:
    """One point of the benchmark matrix."""

    suite: str
    attack: Spec
    defense: tuple[Spec, ...]  # a chain, applied in order; ("none",) for no defense
    arch: Spec
    dataset: Spec
    batch_size: int
    client: tuple[tuple[str, Any], ...]
    victim: str
    seed: int  # repetition index
    base_seed: int
    granted: frozenset[str] = frozenset()
    budget: tuple[tuple[str, Any], ...] = ()
    skip_reason: str | None = None

    @property
    def client_spec(self) -> ClientSpec:
        return ClientSpec(**dict(self.client))

    @property
    def defense_label(self) -> str:
        return chain_label(self.defense)

    def identity(self) -> dict[str, Any]:
        """The canonical configuration: everything that can change the cell's result."""
        return {
            "attack": self.attack.as_dict(),
            "defense": [d.as_dict() for d in self.defense],
            "arch": self.arch.as_dict(),
            "dataset": self.dataset.as_dict(),
            "batch_size": self.batch_size,
            "client": dict(self.client),
            "victim": self.victim,
            "seed": self.seed,
            "base_seed": self.base_seed,
            "granted": sorted(self.granted),
            "budget": dict(self.budget),
        }

    @property
    def cell_id(self) -> str:
        return _digest(self.identity())[:16]

    def describe(self) -> str:
        """One line for listings (``run --dry-run``)."""
        return (f"{self.dataset.label} {self.arch.label} bs={self.batch_size} seed={self.seed} "
                f"{self.defense_label} {self.attack.label}")

    def scenario(self) -> dict[str, Any]:
        """What fixes the private batch and the victim model: shared by attacks and defenses."""
        ident = self.identity()
        return {k: ident[k] for k in ("arch", "dataset", "batch_size", "victim", "seed",
                                      "base_seed")}

    def derived_seeds(self) -> dict[str, int]:
        """Seeds for the scenario (data, model), the defense's and the attack's randomness.

        The attack's seed leaves the defense out: an attack starts from the same dummy data
        against every defense of a scenario, so defense comparisons are paired (common random
        numbers) and differ only by what the defense did.
        """
        ident = self.identity()
        return {
            "scenario": _seed_from(self.scenario()),
            "defense": _seed_from({"scenario": self.scenario(), "defense": ident["defense"]}),
            "attack": _seed_from({k: v for k, v in ident.items() if k != "defense"}),
        }

    def context(self) -> CellContext:
        ds = DATASETS.get(self.dataset.name).cls(**self.dataset.kwargs)
        meta = ds.meta()
        return CellContext(self.arch.name, self.arch.kwargs, self.dataset.name, meta.shape,
                           meta.num_classes, self.batch_size, self.client_spec, self.granted)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, **self.identity(), "skip_reason": self.skip_reason,
                "attack": self.attack.as_json(), "defense": [d.as_json() for d in self.defense],
                "arch": self.arch.as_json(), "dataset": self.dataset.as_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Cell:
        def spec(s: dict[str, Any], kind: str) -> Spec:
            return Spec(s["name"], tuple(sorted(s["params"].items())), kind,
                        tuple(s.get("shown", ())))

        return cls(d["suite"], spec(d["attack"], "attacks"),
                   tuple(spec(s, "defenses") for s in d["defense"]),
                   spec(d["arch"], "archs"), spec(d["dataset"], "datasets"), d["batch_size"],
                   tuple(sorted(d["client"].items())), d["victim"], d["seed"], d["base_seed"],
                   frozenset(d["granted"]), tuple(sorted(d["budget"].items())),
                   d.get("skip_reason"))


def _digest(obj: Any) -> str:
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def _seed_from(obj: Any) -> int:
    return int(_digest(obj)[:8], 16)


@dataclass
class Suite:
    name: str
    description: str
    base_seed: int
    seeds: list[int]
    batch_sizes: list[int]
    granted: frozenset[str]
    clients: list[dict[str, Any]]
    victims: list[str]
    datasets: list[Spec]
    archs: list[Spec]
    defenses: list[tuple[Spec, ...]]
    attacks: list[Spec]
    exclude: list[dict[str, list[Any]]] = field(default_factory=list)
    timeout: float = 600.0
    success_psnr: float = DEFAULT_SUCCESS_PSNR
    budget: dict[str, Any] = field(default_factory=dict)
    utility: dict[str, Any] | None = None
    perceptual: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def expand(self) -> list[Cell]:
        """All cells: the product of the axes minus excludes; incompatible ones carry a reason."""
        cells = []
        budget = tuple(sorted((k, v) for k, v in self.budget.items() if v is not None))
        for ds, arch, bs, client, victim, defense, attack, seed in itertools.product(
            self.datasets, self.archs, self.batch_sizes, self.clients, self.victims,
            self.defenses, self.attacks, self.seeds,
        ):
            entry = ATTACKS.get(attack.name)
            granted = frozenset(entry.cls.needs | entry.cls.wants) & self.granted
            cell = Cell(self.name, attack, defense, arch, ds, bs, tuple(sorted(client.items())),
                        victim, seed, self.base_seed, granted, budget)
            if self._excluded(cell):
                continue
            reason = _incompatibility(cell, self.granted)
            if reason:
                cell = Cell(**{**cell.__dict__, "skip_reason": reason})
            cells.append(cell)
        return cells

    def _excluded(self, cell: Cell) -> bool:
        values = {
            "attack": {cell.attack.name, cell.attack.label},
            "defense": {d.name for d in cell.defense} | {cell.defense_label},
            "arch": {cell.arch.name, cell.arch.label},
            "dataset": {cell.dataset.name, cell.dataset.label},
            "batch_size": {cell.batch_size},
            "mode": {dict(cell.client)["mode"]},
            "victim": {cell.victim},
            "seed": {cell.seed},
        }
        return any(all(values[axis] & set(allowed) for axis, allowed in rule.items())
                   for rule in self.exclude)

    def excluded_utility(self, cell: Any) -> bool:
        """Exclude rules apply to utility cells when they name only their axes."""
        values = {
            "defense": {d.name for d in cell.defense} | {cell.defense_label},
            "arch": {cell.arch.name, cell.arch.label},
            "dataset": {cell.dataset.name, cell.dataset.label},
            "seed": {cell.seed},
        }
        return any(set(rule) <= set(values)
                   and all(values[axis] & set(allowed) for axis, allowed in rule.items())
                   for rule in self.exclude)


_CONTEXT_CACHE: dict[Any, CellContext] = {}


def _incompatibility(cell: Cell, suite_grants: frozenset[str]) -> str | None:
    attack_entry = ATTACKS.get(cell.attack.name)
    missing = sorted(set(attack_entry.cls.needs) - suite_grants)
    if missing:
        return f"{cell.attack.name} needs {', '.join(missing)}, which the suite does not grant"
    key = (cell.arch, cell.dataset, cell.batch_size, cell.client, cell.granted)
    if key not in _CONTEXT_CACHE:
        _CONTEXT_CACHE[key] = cell.context()
    ctx = _CONTEXT_CACHE[key]
    attack = attack_entry.cls(**cell.attack.kwargs)
    reason = attack.skip_reason(ctx)
    if reason:
        return reason
    for d in cell.defense:
        reason = DEFENSES.get(d.name).cls(**d.kwargs).incompatibility(ctx)
        if reason:
            return f"{d.name}: {reason}"
    return None


# ---------------------------------------------------------------------------------------------
# loading and validation


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))}


def load_suite(name_or_path: str) -> Suite:
    """Load a built-in suite by name or a YAML file by path; raise SuiteError naming the key."""
    path = Path(name_or_path)
    builtins = builtin_suites()
    if name_or_path in builtins:
        path = builtins[name_or_path]
    elif not path.exists():
        hint = _suggest(name_or_path, builtins)
        raise SuiteError(f"no built-in suite or file named {name_or_path!r}{hint}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SuiteError(f"{path}: invalid YAML{where}: {problem}") from None
    return parse_suite(raw, default_name=path.stem, source=str(path))


def parse_suite(raw: Any, default_name: str = "suite", source: str = "") -> Suite:
    """Validate a suite mapping; every problem is a SuiteError naming its key."""
    try:
        return _parse_suite(raw, default_name, source)
    except SuiteError:
        raise
    except LeakbenchError as e:
        raise SuiteError(str(e)) from None


def _parse_suite(raw: Any, default_name: str, source: str) -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{source or default_name}: a suite must be a mapping of keys")
    unknown = sorted(set(raw) - set(SUITE_KEYS))
    if unknown:
        raise SuiteError(f"unknown suite key {unknown[0]!r}{_suggest(unknown[0], SUITE_KEYS)}")
    for key in ("datasets", "archs", "defenses", "attacks"):
        if key not in raw:
            raise SuiteError(f"suite key {key!r} is missing")
    name = _typed(raw, "name", str, default_name)
    seed = _typed(raw, "seed", int, 0)
    seeds_raw = raw.get("seeds", 1)
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and seeds_raw >= 1:
        seeds = list(range(seeds_raw))
    elif isinstance(seeds_raw, list) and seeds_raw and all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds_raw):
        seeds = list(seeds_raw)
    else:
        raise SuiteError(f"seeds: expected a positive integer or a list of indices, "
                         f"got {seeds_raw!r}")
    batch_sizes = _int_list(raw.get("batch_size", 1), "batch_size")
    granted = raw.get("grant", []) or []
    if isinstance(granted, str):
        granted = [granted]
    if not isinstance(granted, list):
        raise SuiteError(f"grant: expected a list of capabilities, got {granted!r}")
    for g in granted:
        if g not in CAPABILITIES:
            raise SuiteError(f"grant: unknown capability {g!r}{_suggest(str(g), CAPABILITIES)}")
    clients_raw = raw.get("client", [{}])
    if isinstance(clients_raw, dict):
        clients_raw = [clients_raw]
    if not isinstance(clients_raw, list):
        raise SuiteError(f"client: expected a mapping or a list of mappings, got {clients_raw!r}")
    clients = []
    for i, c in enumerate(clients_raw):
        if not isinstance(c, dict):
            raise SuiteError(f"client[{i}]: expected a mapping, got {c!r}")
        clients += [validate_params(CLIENT_PARAMS, g, f"client[{i}]") for g in _grid(c)]
    victims = raw.get("victim", ["init"])
    if isinstance(victims, str):
        victims = [victims]
    for v in victims:
        _check_victim(v)
    budget = validate_params(BUDGET_PARAMS, raw.get("budget") or {}, "budget")
    from bench.utility import UTILITY_PARAMS

    utility = raw.get("utility")
    if utility is not None:
        if not isinstance(utility, dict):
            raise SuiteError(f"utility: expected a mapping of settings, got {utility!r}")
        utility = validate_params(UTILITY_PARAMS, utility, "utility")
    perceptual = raw.get("perceptual") or {}
    if not isinstance(perceptual, dict):
        raise SuiteError(f"perceptual: expected a mapping of settings, got {perceptual!r}")
    perceptual = validate_params(PERCEPTUAL_PARAMS, perceptual, "perceptual")
    timeout = _typed(raw, "timeout", (int, float), 600.0)
    if timeout <= 0:
        raise SuiteError(f"timeout: expected a positive number of seconds, got {timeout!r}")
    suite = Suite(
        name=name,
        description=_typed(raw, "description", str, ""),
        base_seed=seed,
        seeds=seeds,
        batch_sizes=batch_sizes,
        granted=frozenset(granted),
        clients=clients,
        victims=list(victims),
        datasets=_components(raw["datasets"], DATASETS, "datasets"),
        archs=_components(raw["archs"], ARCHS, "archs"),
        defenses=_defenses(raw["defenses"]),
        attacks=_components(raw["attacks"], ATTACKS, "attacks"),
        exclude=_excludes(raw.get("exclude", []) or []),
        timeout=float(timeout),
        success_psnr=float(_typed(raw, "success_psnr", (int, float), DEFAULT_SUCCESS_PSNR)),
        budget=budget,
        utility=utility,
        perceptual=perceptual,
        source=source,
    )
    return suite


def _typed(raw: dict, key: str, types: Any, default: Any) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, types):
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise SuiteError(f"{key}: expected {want}, got {value!r}")
    return value


def _int_list(value: Any, key: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise SuiteError(f"{key}: expected a positive integer or a list of them, got {value!r}")
    return values


def _check_victim(v: Any) -> None:
    if v == "init":
        return
    if isinstance(v, str) and v.startswith("trained:"):
        n = v.split(":", 1)[1]
        if n.isdigit() and int(n) >= 0:
            return
    raise SuiteError(f"victim: expected 'init' or 'trained:N', got {v!r}")


def _grid(params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Expand a parameter mapping whose list values are grids into every combination."""
    keys = sorted(params)
    axes = [params[k] if isinstance(params[k], list) else [params[k]] for k in keys]
    for combo in itertools.product(*axes):
        yield dict(zip(keys, combo))


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
            if not isinstance(params, dict) and not (name == "chain" and isinstance(params, list)):
                raise SuiteError(f"{key}[{i}].{name}: expected a mapping of parameters, "
                                 f"got {params!r}")
            out.append((str(name), params))
        else:
            raise SuiteError(f"{key}[{i}]: expected a name or a one-key mapping, got {item!r}")
    return out


def _expand_component(name: str, params: dict[str, Any], registry: Registry, where: str
                      ) -> list[Spec]:
    entry = registry.get(name)
    try:
        specs = []
        for combo in _grid(params):
            validated = validate_params(entry.params, combo, where)
            specs.append(Spec(name, tuple(sorted(validated.items())), registry.kind + "s",
                              tuple(sorted(params))))
        return specs
    except LeakbenchError as e:
        raise SuiteError(str(e)) from None


def _components(value: Any, registry: Registry, key: str) -> list[Spec]:
    specs: list[Spec] = []
    for i, (name, params) in enumerate(_items(value, key)):
        try:
            registry.get(name)
        except LeakbenchError as e:
            raise SuiteError(f"{key}[{i}]: {e}") from None
        specs += _expand_component(name, params, registry, f"{key}[{i}].{name}")
    return _unique(specs)


def _defenses(value: Any) -> list[tuple[Spec, ...]]:
    chains: list[tuple[Spec, ...]] = []
    for i, (name, params) in enumerate(_items(value, "defenses")):
        if name == "chain":
            if not isinstance(params, list) or not params:
                raise SuiteError(f"defenses[{i}].chain: expected a list of defenses")
            links = [_components([item], DEFENSES, f"defenses[{i}].chain[{j}]")
                     for j, item in enumerate(params)]
            expanded = [tuple(c) for c in itertools.product(*links)]
            for chain in expanded:
                _check_chain_order(chain, f"defenses[{i}].chain")
            chains += expanded
        else:
            chains += [(s,) for s in _components([{name: params}], DEFENSES,
                                                 f"defenses[{i}]")]
    return _unique(chains)


def _check_chain_order(chain: tuple[Spec, ...], where: str) -> None:
    """A link that rebuilds the update from the batch (DP-SGD) would silently discard the
    update- and protocol-level links before it; only data-level links may precede it."""
    for k, spec in enumerate(chain):
        if not DEFENSES.get(spec.name).cls.recomputes_update:
            continue
        lost = [s.name for s in chain[:k] if DEFENSES.get(s.name).cls.level not in ("data", "none")]
        if lost:
            raise SuiteError(f"{where}: {spec.name} recomputes the update from the batch, so "
                             f"{', '.join(lost)} before it would be discarded; put {spec.name} "
                             f"before them")


def _unique(items: list) -> list:
    seen, out = set(), []
    for it in items:
        if it not in seen:
            seen.add(it)
            out.append(it)
    return out


def _excludes(value: Any) -> list[dict[str, list[Any]]]:
    if not isinstance(value, list):
        raise SuiteError(f"exclude: expected a list of rules, got {value!r}")
    rules = []
    for i, rule in enumerate(value):
        if not isinstance(rule, dict) or not rule:
            raise SuiteError(f"exclude[{i}]: expected a mapping of axis: name(s)")
        for axis in rule:
            if axis not in EXCLUDE_AXES:
                raise SuiteError(f"exclude[{i}]: unknown axis {axis!r}"
                                 f"{_suggest(str(axis), EXCLUDE_AXES)}")
        rules.append({k: v if isinstance(v, list) else [v] for k, v in rule.items()})
    return rules
