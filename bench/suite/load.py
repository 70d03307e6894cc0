"""Loading a suite: a built-in name or a YAML file, validated once, every problem a
:class:`SuiteError` naming its key."""

from __future__ import annotations

import math
import re
from typing import Any

from bench.grants import CAPABILITIES
from bench.metrics import SuccessRule, get_metric
from bench.records import MAX_BATCH_SIZE, victim_problem
from bench.registry import (
    ARCHS,
    ATTACKS,
    DATASETS,
    LeakbenchError,
    PluginError,
    number_from_text,
    short,
    suggest,
    validate_params,
)
from bench.suite.checks import check_rules
from bench.suite.components import component_axis, defense_axis, grid, no_repeats, unique
from bench.suite.limits import check_axes
from bench.suite.read import SuiteDocument, read_suite
from bench.suite.schema import (
    BUDGET_PARAMS,
    CLIENT_PARAMS,
    EXCLUDE_AXES,
    PERCEPTUAL_PARAMS,
    RESOURCE_PARAMS,
    SUCCESS_PARAMS,
    SUITE_KEYS,
    UTILITY_PARAMS,
    Suite,
    SuiteError,
    resource_problem,
)

SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
MAX_SEEDS = MAX_SEED_INDEX = 2 ** 62  # a range's length must fit a C ssize_t (counted lazily)


def load_suite(source: str | SuiteDocument) -> Suite:
    """Load a built-in suite by name, a YAML file by path, or a document :func:`read_suite`
    has read; raise SuiteError naming the file and the key."""
    document = source if isinstance(source, SuiteDocument) else read_suite(source)
    path = document.path
    try:
        return parse_suite(document.raw, default_name=path.stem, source=str(path))
    except SuiteError as e:
        message = str(e)
        if message.startswith(f"{path}:"):
            raise
        raise SuiteError(f"{path}: {message}") from None


def parse_suite(raw: Any, default_name: str = "suite", source: str = "") -> Suite:
    """Validate a suite mapping; every problem is a SuiteError naming its key."""
    try:
        return _parse_suite(raw, default_name, source)
    except (SuiteError, PluginError):  # a broken plug-in is named as itself, not as a key
        raise
    except LeakbenchError as e:
        raise SuiteError(str(e)) from None


def _parse_suite(raw: Any, default_name: str, source: str) -> Suite:
    if not isinstance(raw, dict):
        raise SuiteError(f"{source or default_name}: a suite must be a mapping of keys")
    check_axes(raw)  # a file's were checked as it was read; a mapping's here
    unknown = sorted((k for k in raw if k not in SUITE_KEYS), key=repr)
    if "claims" in unknown and isinstance(raw.get("suite"), str):  # a claims file given to run
        raise SuiteError(f"a claims file (of suite {short(raw['suite'])}), not a suite: run "
                         f"the suite, then 'leakbench check DIR --claims FILE' tests them")
    if unknown:
        raise SuiteError(f"unknown suite key {short(unknown[0])}"
                         f"{suggest(str(unknown[0]), SUITE_KEYS)}")
    for key in ("datasets", "archs", "defenses", "attacks"):
        if key not in raw:
            raise SuiteError(f"suite key {short(key)} is missing")
    name = _typed(raw, "name", str, default_name)
    if not SUITE_NAME.fullmatch(name):
        given = "name" if "name" in raw else "name (from the file name; set name: to override)"
        raise SuiteError(f"{given}: expected letters, digits, '.', '_', '+' or '-' (at most "
                         f"100, used as a folder name), got {short(name)}")
    seed = _typed(raw, "seed", int, 0)
    seeds_raw = raw.get("seeds", 1)
    seeds: range | list[int]
    if isinstance(seeds_raw, int) and not isinstance(seeds_raw, bool) and \
            1 <= seeds_raw <= MAX_SEEDS:
        seeds = range(seeds_raw)  # lazy: a count, not a list
    elif isinstance(seeds_raw, list) and seeds_raw and all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s < MAX_SEED_INDEX
            for s in seeds_raw):
        seeds = no_repeats(list(seeds_raw), "seeds")
    else:
        raise SuiteError(f"seeds: expected a count from 1 to 2**62 or a list of indices "
                         f"below 2**62, got {short(seeds_raw)}")
    batch_sizes = no_repeats(_int_list(raw.get("batch_size", 1), "batch_size"), "batch_size")
    if max(batch_sizes) > MAX_BATCH_SIZE:
        raise SuiteError(f"batch_size: {max(batch_sizes)} is above the maximum "
                         f"{MAX_BATCH_SIZE}")
    granted = _given(raw, "grant", [])
    if isinstance(granted, str):
        granted = [granted]
    if not isinstance(granted, list):
        raise SuiteError(f"grant: expected a list of capabilities, got {short(granted)}")
    for g in granted:
        if not isinstance(g, str) or g not in CAPABILITIES:
            raise SuiteError(f"grant: unknown capability {short(g)}{suggest(str(g), CAPABILITIES)}")
    no_repeats(granted, "grant")
    clients_raw = raw.get("client", [{}])
    if isinstance(clients_raw, dict):
        clients_raw = [clients_raw]
    if not isinstance(clients_raw, list) or not clients_raw:
        raise SuiteError(f"client: expected a mapping or a non-empty list of mappings, "
                         f"got {short(clients_raw)}")
    clients = []
    for i, c in enumerate(clients_raw):
        if not isinstance(c, dict):
            raise SuiteError(f"client[{i}]: expected a mapping, got {short(c)}")
        points = [validate_params(CLIENT_PARAMS, g, f"client[{i}]")
                  for g in grid(c, f"client[{i}]")]
        for p in points:  # a zero step shares a zero update: every attack "diverged"
            if p["mode"] == "fedavg" and p["lr"] == 0:
                raise SuiteError(f"client[{i}]: lr 0 with fedavg shares no update (local steps "
                                 "of size 0); give lr above 0")
        no_repeats([tuple(sorted(p.items())) for p in points], f"client[{i}]",
                   lambda point, given=c: ", ".join(f"{k}={v}" for k, v in point if k in given),
                   " in its grid", "; values that validate alike, e.g. 1 and 1.0, are one")
        clients += points
    clients = unique(clients, key=lambda c: tuple(sorted(c.items())))
    victims = raw.get("victim", ["init"])
    if isinstance(victims, str):
        victims = [victims]
    if not isinstance(victims, list) or not victims:
        raise SuiteError(f"victim: expected 'init', 'trained:N' or a list of them, "
                         f"got {short(victims)}")
    for v in victims:
        _check_victim(v)
    victims = no_repeats(victims, "victim")
    budget = _settings(raw, "budget", BUDGET_PARAMS, of="caps")
    if "utility" in raw and raw["utility"] is None:  # `utility:` with its settings all
        # commented out had turned the track off in silence
        raise SuiteError("utility: null turns the utility track off, as leaving the key out "
                         "does; give a mapping ({} for its defaults) or remove the key")
    utility = None if raw.get("utility") is None else _settings(raw, "utility", UTILITY_PARAMS)
    if utility is not None and utility["lr"] == 0:  # an untrained model's accuracy, "ok"
        raise SuiteError("utility.lr: 0 never moves the model, so no defense costs anything; "
                         "give lr above 0")
    if isinstance(raw.get("perceptual"), dict) and "fid_weights" in raw["perceptual"]:
        raise SuiteError("perceptual.fid_weights is not a suite setting: FID and KID are "
                         "scored by `leakbench report`, which takes the Inception weights from "
                         "--fid-weights or $LEAKBENCH_FID_WEIGHTS")
    if "perceptual" in raw and raw["perceptual"] is None:  # `perceptual:` blank: off, or on?
        raise SuiteError("perceptual: null would keep LPIPS on (the defaults); give a mapping, "
                         "e.g. {lpips: false} to turn it off, or leave the key out")
    perceptual = _settings(raw, "perceptual", PERCEPTUAL_PARAMS)
    resources = _settings(raw, "resources", RESOURCE_PARAMS)
    for resource, value in resources.items():
        problem = None if value is None else resource_problem(resource, value)
        if problem:  # a GPU share of 1e-5: within the schema's range, refused by Ray
            raise SuiteError(f"resources.{resource}: {problem}")
    timeout = _finite(raw, "timeout", 600.0)
    if timeout <= 0:
        raise SuiteError(f"timeout: expected a positive number of seconds, got {short(timeout)}")
    suite = Suite(
        name=name,
        description=_typed(raw, "description", str, ""),
        base_seed=seed,
        seeds=seeds,
        batch_sizes=batch_sizes,
        granted=frozenset(granted),
        clients=clients,
        victims=list(victims),
        datasets=component_axis(raw["datasets"], DATASETS, "datasets"),
        archs=component_axis(raw["archs"], ARCHS, "archs"),
        defenses=defense_axis(raw["defenses"]),
        attacks=component_axis(raw["attacks"], ATTACKS, "attacks"),
        exclude=_excludes(_given(raw, "exclude", [])),
        timeout=float(timeout),
        success=_success_rule(raw),
        budget=budget,
        utility=utility,
        perceptual=perceptual,
        resources=resources,
        source=source,
    )

    _rule_applies(raw, suite)
    suite.warnings = check_rules(suite)
    return suite


def _rule_applies(raw: dict[str, Any], suite: Suite) -> None:
    """Refuse a success rule given on a metric of a modality no dataset of the suite has:
    every cell would be judged by its own modality's default instead, with no word."""
    if "success" not in raw and "success_psnr" not in raw:
        return
    metric = get_metric(suite.success.metric)
    modalities = {DATASETS.get(d.name).cls.modality for d in suite.datasets}
    if metric.modality not in modalities:
        key = "success.metric" if "success" in raw else "success_psnr"
        raise SuiteError(f"{key}: {metric.name} scores {metric.modality} and this suite has "
                         f"only {' and '.join(sorted(modalities))} datasets (each cell would "
                         "be judged by its modality's default rule instead)")


def _success_rule(raw: dict[str, Any]) -> SuccessRule:
    """``success: {metric, at_least | at_most}``, or the ``success_psnr`` shorthand."""
    if "success" in raw and "success_psnr" in raw:
        raise SuiteError("success and success_psnr both given: keep one")
    if "success" not in raw:
        threshold = _finite(raw, "success_psnr", 20.0)
        _reachable(get_metric("psnr"), "success_psnr", threshold)
        return SuccessRule("psnr", threshold)
    if not isinstance(raw["success"], dict):
        raise SuiteError(f"success: expected a mapping, got {short(raw['success'])}")
    rule = validate_params(SUCCESS_PARAMS, raw["success"], "success")
    try:
        metric = get_metric(rule["metric"])
        if metric.kind != "per_item":
            raise SuiteError(f"success.metric: {metric.name} is pooled over cells; a cell's "
                             "success needs a per-item metric")
        if metric.needs_weights:  # scored after the rule, and n/a without its weights file
            raise SuiteError(f"success.metric: {metric.name} needs a local weights file and "
                             "is n/a without it; a cell's success needs a metric every cell "
                             "computes")
        bound = {k: rule[k] for k in ("at_least", "at_most") if rule[k] is not None}
        side = "at_least" if metric.higher_is_better else "at_most"
        if not bound and metric.name != "psnr":  # the default 20 is PSNR's (in dB)
            raise SuiteError(f"success: give {metric.name}'s bound ({side}: a value; "
                             f"{'higher' if metric.higher_is_better else 'lower'} is better)")
        for key, value in bound.items():
            _reachable(metric, f"success.{key}", value)
        return SuccessRule(rule["metric"], **bound)
    except SuiteError:
        raise
    except (LeakbenchError, ValueError) as e:
        raise SuiteError(f"success: {e}") from None


def _reachable(metric: Any, where: str, bound: float) -> None:
    """Refuse a success bound that no cell can meet (past the metric's best value) or that
    every cell meets (at or past its worst: PSNR ≥ 0, MSE ≤ 1)."""
    low, high = metric.bounds()
    worst = low if metric.higher_is_better else high
    if not low <= bound <= high or bound == worst:
        side = "above" if metric.higher_is_better else "below"
        raise SuiteError(f"{where}: {bound:g} is not a bound some cells meet and others not: "
                         f"{metric.name} takes values in [{low:g}, {high:g}]; give one "
                         f"{side} {worst:g}")


def _typed(raw: dict, key: str, types: Any, default: Any) -> Any:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, types):
        want = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise SuiteError(f"{key}: expected {want}, got {short(value)}")
    return value


def _finite(raw: dict, key: str, default: float) -> float:
    """A finite number (NaN and infinities are refused here, not found later); a string
    such as ``1e3``, which YAML 1.1 reads as text, is read as the number it spells, as a
    component's float parameters are."""
    value = raw.get(key, default)
    if isinstance(value, str):
        number = number_from_text(value)
        value = value if number is None else number  # "inf": the finite check names it
    value = _typed({key: value}, key, (int, float), default)
    try:
        value = float(value)
    except OverflowError:
        raise SuiteError(f"{key}: {short(value)} is too large") from None
    if not math.isfinite(value):
        raise SuiteError(f"{key}: expected a finite number, got {short(value)}")
    return value


def _int_list(value: Any, key: str) -> list[int]:
    values = value if isinstance(value, list) else [value]
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise SuiteError(f"{key}: expected a positive integer or a list of them, "
                         f"got {short(value)}")
    return values


def _check_victim(v: Any) -> None:
    problem = victim_problem(v)
    if problem:
        raise SuiteError(f"victim: {problem}")



CLIENT_CHOICES = {p.name: p.choices for p in CLIENT_PARAMS if p.name in ("mode", "bn_mode")}
"""The values an exclude rule's client keys can take."""


def _given(raw: dict[str, Any], key: str, default: Any) -> Any:
    """``raw[key]``, or ``default`` where the key is absent or null (``~``). Only those: a
    false value (``perceptual: off`` reads as False) is a value, for the key's own check to
    refuse; ``or default`` had turned it into the defaults (LPIPS stayed on)."""
    value = raw.get(key)
    return default if value is None else value


def _settings(raw: dict[str, Any], key: str, params: tuple, of: str = "settings"
              ) -> dict[str, Any]:
    """The mapping under ``key`` (absent or null: every default), validated against
    ``params``; anything but a mapping is refused in one line."""
    value = _given(raw, key, {})
    if not isinstance(value, dict):
        raise SuiteError(f"{key}: expected a mapping of {of}, got {short(value)}")
    return validate_params(params, value, key)


def _excludes(value: Any) -> list[dict[str, list[Any]]]:
    if not isinstance(value, list):
        raise SuiteError(f"exclude: expected a list of rules, got {short(value)}")
    rules = []
    for i, rule in enumerate(value):
        if not isinstance(rule, dict) or not rule:
            raise SuiteError(f"exclude[{i}]: expected a mapping of axis: name(s)")
        for axis in rule:
            if axis not in EXCLUDE_AXES:
                raise SuiteError(f"exclude[{i}]: unknown axis {short(axis)}"
                                 f"{suggest(str(axis), EXCLUDE_AXES)}")
        values = {k: v if isinstance(v, list) else [v] for k, v in rule.items()}
        for axis, allowed in values.items():
            if not allowed or not all(isinstance(a, (str, int, float)) for a in allowed):
                raise SuiteError(f"exclude[{i}].{axis}: expected a name, a number or a "
                                 f"non-empty list of them, got {short(rule[axis])}")
            # a rule matches by value: true dropped seed 1, and "0" matched no cell
            if axis in ("seed", "batch_size") and not all(
                    isinstance(a, (int, float)) and not isinstance(a, bool) for a in allowed):
                raise SuiteError(f"exclude[{i}].{axis}: expected a number or a list of them, "
                                 f"got {short(rule[axis])}")
            choices = CLIENT_CHOICES.get(axis, ())
            for a in allowed if choices else ():
                if a not in choices:
                    raise SuiteError(f"exclude[{i}].{axis}: {short(a)} is not a client {axis}"
                                     f"{suggest(str(a), choices)}; expected one of "
                                     f"{', '.join(choices)}")
        rules.append(values)
    return rules
