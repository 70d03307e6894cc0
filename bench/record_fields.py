"""The record's nested fields, checked before any reader trusts them: each reader (the
frames, the curves, the plots, the architecture and text tables) takes them as written, so a
field of the wrong type or an absurd size is a damaged record, named and quarantined, never a
traceback or a model built at a hand-edited shape."""

from __future__ import annotations

import math
from pathlib import PurePosixPath
from typing import Any

from bench.perceptual import LPIPS_SCORING
from bench.records import (
    MAX_METRIC_MAGNITUDE,
    metric_out_of_bounds,
    record_modality,
    registered_metric,
    victim_problem,
)
from bench.registry import DATASETS, short
from bench.suite.schema import LPIPS_NETS

MAX_SIDE = 1 << 15  # a stored input's channels, height or width (or a text's length)
MAX_INPUT_VALUES = 1 << 26  # a shape past these was hand-edited: the architecture table
MAX_CLASSES = 1 << 24  # builds a model at it (a vocabulary of 128k fits)
PICTURES = "cells"  # the results folder's artifacts (a cell's picture and arrays)

_NUMBER = "a number"
_TEXT = "text"


def _kind_of(value: Any, want: str) -> bool:
    """Whether ``value`` is None or of the kind ``want`` (a number: int or float, not bool)."""
    if value is None:
        return True
    if want == _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)


def nested_problem(d: dict[str, Any]) -> str | None:
    """Why a field inside the record (a grant, the client's mode, a curve point, ...) has a
    type its readers cannot take (the frames, curves and plots read them as written), or
    None. Absent or null fields read as their defaults."""
    parts = [d["arch"], d["dataset"], *d["defense"], *([d["attack"]] if "attack" in d else [])]
    if not all(isinstance(p.get("params"), dict) for p in parts):
        return "a component without a params mapping"
    if not all(isinstance(p.get("shown", []), list) and all(
            isinstance(k, str) for k in p.get("shown", [])) for p in parts):
        return "a component whose 'shown' is not a list of parameter names"
    rule = d.get("success_rule")
    if rule is not None and not (isinstance(rule, dict) and isinstance(rule.get("metric"), str)
                                 and set(rule) <= {"metric", "at_least", "at_most"}
                                 and _kind_of(rule.get("at_least"), _NUMBER)
                                 and _kind_of(rule.get("at_most"), _NUMBER)
                                 and (rule.get("at_least") is None) != (
                                     rule.get("at_most") is None)):
        return ("field 'success_rule' is not {metric: text, and one of at_least/at_most: a "
                "number}")
    if rule is not None and d.get("status") == "ok" and registered_metric(
            rule["metric"]) is None and rule["metric"] not in (d.get("metrics") or {}):
        # a finished cell scored its rule's metric (a plug-in's too, where it is not
        # installed here); a cell that did not finish carries the rule all the same
        return f"field 'success_rule' names the unknown metric {short(rule['metric'])}"
    for key in ("picture", "arrays"):  # a file under the folder's cells/ (merge writes it
        rel = d.get(key)  # there: a path into records/ overwrote another cell's record)
        if rel is not None and not (isinstance(rel, str) and "\0" not in rel and _in_cells(rel)):
            return f"field {key!r} is not a file name under {PICTURES}/"
    for key in ("per_image", "per_sequence"):  # the site formats them as numbers
        per_item = (d.get("metrics") or {}).get(key)
        if per_item is not None and not (isinstance(per_item, dict) and all(
                isinstance(v, list) and v and all(_kind_of(x, _NUMBER) for x in v)
                for v in per_item.values())):
            return f"field 'metrics.{key}' is not a mapping of metric → non-empty list of numbers"
    scoring = (d.get("metrics") or {}).get(LPIPS_SCORING)
    if scoring is not None and not (isinstance(scoring, dict) and set(scoring) == {"net"}
                                    and scoring["net"] in LPIPS_NETS):
        return (f"field 'metrics.{LPIPS_SCORING}' is not {{net: one of "
                f"{', '.join(LPIPS_NETS)}}}")
    if not all(isinstance(g, str) for g in d.get("granted") or []):
        return "a grant that is not text"
    victim = victim_problem(d["victim"], written=True) if d.get("victim") is not None else None
    if victim:  # rerun trains it again: trained:999999999 ran for hours
        return f"field 'victim': {victim}"
    client = d.get("client") or {}
    for key, value in client.items():
        if isinstance(value, (dict, list)) or (key in ("mode", "bn_mode")
                                               and not _kind_of(value, _TEXT)):
            return f"client field {key!r} has a value of the wrong type"
    privacy = (d.get("metrics") or {}).get("privacy") if d.get("kind") == "utility" else None
    epsilons = [("defense_info.epsilon", (d.get("defense_info") or {}).get("epsilon")),
                ("metrics.privacy.epsilon",
                 privacy.get("epsilon") if isinstance(privacy, dict) else None)]
    checks = [("success_psnr", d.get("success_psnr"), _NUMBER),
              *((where, eps, _NUMBER) for where, eps in epsilons),
              ("attack_info.restarts_run", (d.get("attack_info") or {}).get("restarts_run"),
               _NUMBER),
              ("trial_batch.time_share", (d.get("trial_batch") or {}).get("time_share"), _TEXT),
              *((f"converged_at.{k}", (d.get("converged_at") or {}).get(k), _NUMBER)
                for k in ("grad_evals", "iterations", "seconds")),
              *((key, value, _NUMBER) for key, value in _counts(d).items())]
    for where, value, want in checks:
        if not _kind_of(value, want):
            return f"field {where!r} is not {want}"
    for where, eps in epsilons:  # -5 had been shown as ε -5.00
        if eps is not None and not eps >= 0:
            return f"field {where!r} is {eps!r}: a privacy budget ε is 0 or more"
    for point in d.get("curve") or []:
        if not isinstance(point, dict) or not all(
                point.get(k) is not None and _kind_of(point[k], _NUMBER)
                for k in ("grad_evals", "seconds", "psnr")):
            return "a curve point without numbers for grad_evals, seconds and psnr"
        problem = (metric_out_of_bounds("psnr", point["psnr"]) if _finite(point["psnr"])
                   else None) or _count_problem("curve point", point, ("grad_evals", "seconds"))
        if problem:
            return problem
    return _shape_problem(d) or _utility_problem(d)


UTILITY_RANGES = {"accuracy": (0.0, 1.0), "chance": (0.0, 1.0), "update_cosine": (-1.0, 1.0)}


def _utility_problem(d: dict[str, Any]) -> str | None:
    """Why a utility record's accuracy, chance level, update cosine or evaluation size cannot
    be (no metric registry bounds them: an accuracy of 5 was shown, and starred)."""
    if d.get("kind") != "utility":
        return None
    metrics = d.get("metrics") or {}
    for key, (low, high) in UTILITY_RANGES.items():
        value = metrics.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"utility metric {key!r} is {short(value)}, not a number"  # the tables' mean
        if isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(
                value) and not low - 1e-6 <= value <= high + 1e-6:  # rounding's slack
            return f"utility metric {key!r} is {value!r}, outside [{low:g}, {high:g}]"
    size = metrics.get("eval_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        return f"utility metric 'eval_size' is {short(size)}, not a count"  # 0: none scored
    return None


def _counts(d: dict[str, Any]) -> dict[str, Any]:
    """The record's evaluation counts, peak memory and timings, by their field names."""
    return {"grad_evals": d.get("grad_evals"), "iterations": d.get("iterations"),
            "peak_memory_bytes": d.get("peak_memory_bytes"),
            **{f"timing.{k}": v for k, v in (d.get("timing") or {}).items()}}


def _in_cells(rel: str) -> bool:
    parts = PurePosixPath(rel).parts
    return len(parts) >= 2 and parts[0] == PICTURES and ".." not in parts


def _finite(value: float) -> bool:
    """Not NaN or infinity; an integer of any size is finite (math.isfinite overflowed)."""
    return not isinstance(value, float) or math.isfinite(value)


def _count_problem(where: str, values: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """A count or a duration that is negative or beyond any run (the tables print it); NaN
    and infinity are the writer's check (:func:`bench.json_values.unwritable`)."""
    for key in keys:
        value = values.get(key)
        if value is not None and _finite(value) and not 0 <= value <= MAX_METRIC_MAGNITUDE:
            return f"{where} {key} {short(value)} is outside 0..{MAX_METRIC_MAGNITUDE:g}"
    return None


def _shape_problem(d: dict[str, Any]) -> str | None:
    """The fields the frames key or index by: seeds (pool keys), a pass's cells, the input
    shape the architecture table builds a model at, the sentence pairs the text tables show."""
    seeds = d.get("derived_seeds") or {}
    if not all(isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
               for k, v in seeds.items()):
        return "field 'derived_seeds' is not a mapping of name → integer seed"
    if "base_seed" in d and (isinstance(d["base_seed"], bool)
                             or not isinstance(d["base_seed"], int)):
        return "field 'base_seed' is not an integer"
    if not d["defense"]:
        return "field 'defense' is an empty chain (no defense is [none])"
    batch = d.get("trial_batch") or {}
    if not (isinstance(batch.get("cells", []), list)
            and all(isinstance(c, str) for c in batch.get("cells", []))
            and _kind_of(batch.get("trials"), _NUMBER)):
        return "field 'trial_batch' is not {cells: [cell ids], trials: a number, ...}"
    numbers = _counts(d)  # numbers already (nested_problem's checks)
    problem = _count_problem("field", numbers, tuple(numbers))
    if problem:
        return problem
    meta = d.get("input_meta")
    if meta is not None and not _input_meta_ok(meta):
        return (f"field 'input_meta' is not {{shape: 1 to 3 sizes of 1..{MAX_SIDE}, at most "
                f"{MAX_INPUT_VALUES} values, num_classes: 1..{MAX_CLASSES}}}")
    if meta is not None and d["dataset"]["name"] in DATASETS and record_modality(
            d) == "image" and len(meta["shape"]) != 3:  # (a plug-in's not installed: unknown)
        return "field 'input_meta' of an image dataset is not a shape of 3 sizes (C, H, W)"
    pairs = d.get("text_pairs")
    if pairs is not None and not (isinstance(pairs, list) and all(
            isinstance(p, dict) and all(isinstance(p.get(k), list)
                                        for k in ("original", "recovered", "correct"))
            for p in pairs)):
        return "field 'text_pairs' is not a list of {original, recovered, correct} lists"
    return None


def _input_meta_ok(meta: Any) -> bool:
    if not isinstance(meta, dict):
        return False
    shape, classes = meta.get("shape"), meta.get("num_classes")
    if not (isinstance(shape, list) and 1 <= len(shape) <= 3 and all(
            isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= MAX_SIDE
            for n in shape) and math.prod(shape) <= MAX_INPUT_VALUES):
        return False
    return isinstance(classes, int) and not isinstance(classes, bool) and \
        1 <= classes <= MAX_CLASSES
