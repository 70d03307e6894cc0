"""Typed records: the documented schema of what one cell leaves behind, and the outcome a cell
returns to the runner (record plus artifacts as separate values, so that a worker on another
machine needs no shared disk: the runner is the only writer of the store).

The JSON layout is flat and unchanged since ``record_version`` 1: a record is the cell's JSON
(identity and labels) plus the outcome fields below. Keys a newer or older leakbench wrote that
this type does not declare are kept verbatim in ``extra``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bench.identity import component_labels
from bench.provenance import plugin_versions, provenance
from bench.registry import short

RECORD_VERSION = 1
MAX_BATCH_SIZE = 100_000
"""The largest batch a suite may ask for; a record with a larger one is damaged."""
MAX_VICTIM_STEPS = 1_000_000  # SGD steps of a trained:N victim (trained:50 takes seconds)
STATUSES = ("ok", "diverged", "error", "timeout", "skipped")


def victim_problem(v: Any, written: bool = False) -> str | None:
    """Why ``v`` is no victim state a suite may name ("init" or "trained:N", N from 1 to
    MAX_VICTIM_STEPS, written without leading zeros), or None. ``written``: a record's,
    held to the form and the step cap only (``rerun`` trains it again; older suites took
    trained:0 and trained:05, and their records stay readable)."""
    if v == "init":
        return None
    if isinstance(v, str) and v.startswith("trained:"):
        n = v.split(":", 1)[1]
        if n.isascii() and n.isdigit():  # not "²", which isdigit() accepts and int() refuses
            if int(n) == 0 and not written:  # the same model as init, another cell id
                return f"{short(v)} trains for no step: write 'init'"
            if n != str(int(n)) and not written:  # trained:05 and trained:5: one model
                return f"write {short(v)} as 'trained:{int(n)}'"
            if int(n) > MAX_VICTIM_STEPS:
                return f"{short(v)} trains for more than {MAX_VICTIM_STEPS} steps"
            return None
    return f"expected 'init' or 'trained:N', got {short(v)}"
FAILURE_STATUSES = ("error", "timeout")


@dataclass(kw_only=True)
class Record:
    """The fields every cell kind's record has."""

    record_version: int = RECORD_VERSION
    kind: str
    suite: str
    cell_id: str
    status: str  # one of STATUSES
    error: str | None = None  # the error or skip reason
    skip_reason: str | None = None
    metrics: dict[str, Any] | None = None
    timing: dict[str, float] = field(default_factory=dict)
    derived_seeds: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    defense: list[dict[str, Any]] = field(default_factory=list)
    arch: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    base_seed: int = 0
    defense_label: str = ""
    arch_label: str = ""
    dataset_label: str = ""
    traceback: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # written only when set: absent keys and null values read the same
    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"traceback"})

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name != "extra"}
        out = {k: v for k, v in out.items() if not (k in self.OPTIONAL and v is None)}
        return {**self.extra, **out}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Record:
        """A record of the right kind from its JSON; unknown keys land in ``extra``."""
        kind_cls = RECORD_TYPES.get(d.get("kind", "attack"), Record)
        names = {f.name for f in dataclasses.fields(kind_cls)} - {"extra"}
        known = {k: v for k, v in d.items() if k in names}
        known.setdefault("kind", "attack")
        return kind_cls(**known, extra={k: v for k, v in d.items() if k not in names})


@dataclass(kw_only=True)
class AttackRecord(Record):
    """An attack cell: the attack's cost and diagnostics beside the metrics."""

    kind: str = "attack"
    attack: dict[str, Any] = field(default_factory=dict)
    attack_label: str = ""
    batch_size: int = 1
    client: dict[str, Any] = field(default_factory=dict)
    victim: str = "init"
    granted: list[str] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    success_psnr: float | None = None  # the rule's threshold when it is on PSNR
    success_rule: dict[str, Any] | None = None  # {metric, at_least, at_most}
    iterations: int | None = None
    grad_evals: int | None = None
    loss_trace: list[float | None] | None = None
    attack_info: dict[str, Any] | None = None
    defense_info: dict[str, Any] | None = None
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None
    picture: str | None = None  # the PNG grid, relative to the results folder
    arrays: str | None = None  # originals and matched reconstructions (.npy), for FID/KID
    picture_error: str | None = None
    # text: each original sentence beside its matched recovery, tokens marked when correct
    text_pairs: list[dict[str, Any]] | None = None
    floor_metrics: dict[str, float] | None = None  # a mid-grey guess's scores (bench.scoring)
    # the dataset's {shape: [C, H, W], num_classes}: the architecture table reads it here, so
    # a leaderboard never rebuilds a dataset (files absent on another machine)
    input_meta: dict[str, Any] | None = None
    # a secure aggregate: {clients: K, observed_batch: K·B, own_images: [start, stop]}, the
    # private client's images within the scored batch (metrics own_psnr, own_recovered)
    aggregate: dict[str, Any] | None = None
    # PSNR against compute: [{grad_evals, seconds, psnr}], snapshots scored after the attack
    curve: list[dict[str, float]] | None = None
    # where the stopping criterion ended the run, its seconds on attack_seconds' clock (records
    # before 2026-12-03 also repeat it in attack_info, with the attack's own seconds)
    converged_at: dict[str, float] | None = None
    # a batched pass: {cells: [ids], trials: K, pass_seconds, time_share: "trial clock" (the
    # pass divided by its trials' clocks) or "equal" (an attack that keeps none),
    # peak_memory: "pass" (peak_memory_bytes is the pass's, not the cell's)}; a pass
    # that raised: {cells, trials, fallback: its error} (each cell then ran alone); a task
    # that failed as a whole: {cells, trials, task_seconds} (wall_seconds: the task's)
    trial_batch: dict[str, Any] | None = None

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({
        "traceback", "success_rule", "iterations", "grad_evals", "loss_trace", "attack_info",
        "defense_info", "peak_memory_bytes", "memory_kind", "picture", "arrays", "picture_error",
        "text_pairs", "floor_metrics", "aggregate", "curve", "converged_at", "trial_batch",
        "input_meta"})


@dataclass(kw_only=True)
class UtilityRecord(Record):
    """A utility cell: test accuracy after training with defended updates."""

    kind: str = "utility"
    utility: dict[str, Any] = field(default_factory=dict)
    utility_note: str | None = None

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"traceback", "utility_note"})


RECORD_TYPES: dict[str, type[Record]] = {"attack": AttackRecord, "utility": UtilityRecord}


def header(cell: Any, device: torch.device) -> dict[str, Any]:
    """The fields every record of ``cell`` starts with: identity, labels, seeds, provenance."""
    prov = provenance(device)
    plugins = plugin_versions(cell)
    if plugins:  # only where a plug-in ran: built-in cells' records are as they were
        prov["plugins"] = plugins
    return {**cell.to_json(), "record_version": RECORD_VERSION, "kind": cell.kind,
            "cell_id": cell.cell_id, **component_labels(cell),
            "derived_seeds": cell.derived_seeds(), "provenance": prov}


def new_record(cell: Any, device: torch.device, status: str, error: str | None = None,
               **fields: Any) -> Record:
    """A record of ``cell``'s kind with its header and the given outcome fields."""
    return Record.from_json({**header(cell, device), "status": status, "error": error,
                             **fields})


@dataclass
class Outcome:
    """What running a cell returns: the record and its artifacts (path relative to the
    results folder → bytes), written by the runner alone."""

    record: Record
    artifacts: dict[str, bytes] = field(default_factory=dict)


def input_meta(meta: Any) -> dict[str, Any]:
    """A dataset's input shape and class count, as a record keeps them."""
    return {"shape": [int(d) for d in meta.shape], "num_classes": int(meta.num_classes)}


def record_modality(record: dict[str, Any]) -> str:
    """"image" or "text": the modality of a record's dataset. A dataset not registered here
    (a plug-in this machine lacks) is read off the record's metrics (text where they hold
    ROUGE-1 and no PSNR), or where it has none off its success rule's metric."""
    from bench.registry import DATASETS

    name = (record.get("dataset") or {}).get("name")
    if name in DATASETS:
        return DATASETS.get(name).cls.modality
    for metrics in (record.get("metrics"), record.get("floor_metrics")):
        if isinstance(metrics, dict) and metrics:
            return "text" if "rouge1" in metrics and "psnr" not in metrics else "image"
    from bench.metrics import METRICS

    rule = record.get("success_rule")  # a skipped or failed cell's too: its suite's rule
    metric = rule.get("metric") if isinstance(rule, dict) else None
    return METRICS.get(metric).cls.modality if isinstance(metric, str) and metric in METRICS \
        else "image"


MAX_METRIC_MAGNITUDE = 1e12
"""No metric's value is larger in magnitude (FID is in the hundreds); a record's is damaged."""


def registered_metric(key: str) -> str | None:
    """The registered metric a record's metrics ``key`` holds (``psnr`` for ``psnr`` and
    ``psnr_worst``), or None."""
    from bench.metrics import METRICS  # the registry, loaded on first use

    name = key.removesuffix("_worst")
    return name if name in METRICS else None


def metric_out_of_bounds(key: str, value: object) -> str | None:
    """Why a metric's value (``psnr`` or its ``psnr_worst``) cannot be one the metric takes,
    by its schema's bounds, or beyond ``MAX_METRIC_MAGNITUDE`` for any metric (a hand-edited
    or damaged record), or None. Ints compare exactly: no float overflow."""
    from bench.metrics import get_metric  # the registry, loaded on first use

    if isinstance(value, (str, bool)) or not isinstance(value, (int, float)):
        return None
    if value != value or not -MAX_METRIC_MAGNITUDE <= value <= MAX_METRIC_MAGNITUDE:  # NaN
        return f"metric {key!r} is {_number_text(value)}, beyond what any metric takes"
    name = registered_metric(key)
    if name is None:
        return None
    low, high = get_metric(name).bounds()
    slack = 1e-6 * max(1.0, abs(low), abs(high)) if math.isfinite(high - low) else 0.0
    if not low - slack <= value <= high + slack:
        return (f"metric {key!r} is {_number_text(value)}, outside its range "
                f"[{low:g}, {high:g}]")
    return None


def _number_text(value: float) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."
