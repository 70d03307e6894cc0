"""``leakbench rerun DIR --sample N``: re-run N random committed cells on this machine and say,
per row, whether the fresh values fall inside the committed intervals.

Bit equality of a cell across CPUs is not promised: L-BFGS and Adam trajectories depend on the
floating-point kernels (summation order differs between AVX2 and AVX-512 builds, and between
thread counts), and a gradient-matching optimisation is chaotic, so one seed can land at 5 dB
on one machine and 35 dB on another. What a second machine can check is the distribution: a
fresh run of a seed is a new draw of the row's metric. Two intervals are reported for it: the
committed row's 95% t-interval of the *mean* (the tables' ±, with the tables' floors), and
the 95% prediction interval of *one new seed* (mean ± t·s·√(1 + 1/n)) from the row's *other*
seeds, the statistically apt check for a single value.

The metric is checked before any cell runs: a pooled one (FID, KID) has no value per cell,
and LPIPS without its local weights has none either (:func:`rerun_metric`). The folder is only
read: a damaged record is named and left in place, as ``leakbench diff`` leaves it.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
from scipy.stats import t as student_t

from bench.cache import cache_problem
from bench.cells import RunOptions, cell_from_json
from bench.convolutions import CPU_CONV, DEFAULT_CPU_CONV
from bench.cores import plan_parallelism, usable_cores
from bench.executors import make_executor
from bench.executors.base import timed_out_under
from bench.grants import CAPABILITIES
from bench.leaderboard.frames import (
    SCENARIO,
    record_client,
    record_victim,
    records_frame,
    shared_pass,
)
from bench.leaderboard.text_tables import records_metric
from bench.leaderboard.uncertainty import LEVEL, metric_interval, seed_values
from bench.markdown import pipe_table
from bench.metrics import Metric, SuccessRule, resolve_per_item
from bench.metrics.base import fixed
from bench.paths import store_problem
from bench.perceptual import lpips_setting, lpips_status
from bench.records import STATUSES
from bench.registry import REGISTRIES, LeakbenchError, short, validate_params
from bench.runner import gpu_jobs, resolve_device
from bench.store import load_records
from bench.suite.schema import BUDGET_PARAMS, CLIENT_PARAMS
from bench.text_scoring import success_rule

ROW = [*SCENARIO, "defense", "attack"]


@dataclass
class Check:
    """One re-run cell against its committed row."""

    cell_id: str
    row: str
    n: int
    mean: float | None
    ci: tuple[float, float] | None  # of the mean
    pi: tuple[float, float] | None  # for one new seed
    committed: float | None
    fresh: float | None
    status: str
    metric: str = "psnr"
    batched: bool = False  # the committed record shared a pass with other cells
    error: str | None = None  # why the fresh run ended as it did, when not ok

    @property
    def in_ci(self) -> bool | None:
        return _inside(self.fresh, self.ci)

    @property
    def in_pi(self) -> bool | None:
        return _inside(self.fresh, self.pi)


def _inside(value: float | None, bounds: tuple[float, float] | None) -> bool | None:
    if value is None or bounds is None or not math.isfinite(value):
        return None
    return bounds[0] <= value <= bounds[1]


def prediction_interval(values: list[float], level: float = LEVEL) -> tuple[float, float] | None:
    """The interval that holds one new draw with probability ``level`` (normal model)."""
    if len(values) < 2:
        return None
    mean, s = statistics.fmean(values), statistics.stdev(values)
    half = float(student_t.ppf(0.5 + level / 2, len(values) - 1)) * s * math.sqrt(
        1 + 1 / len(values))
    return mean - half, mean + half


def _row_label(r: pd.Series) -> str:
    parts = [str(r[c]) for c in ROW if isinstance(r[c], str) and r[c] or c == "batch_size"]
    return " · ".join(parts)


def options_of(records: dict[str, dict[str, Any]]) -> RunOptions:
    """The run's success rule and LPIPS backbone, as its records state them (the suite's
    other settings do not change a metric)."""
    nets = [lpips_setting(r.get("metrics")) for r in records.values()]
    net = next((n for n in nets if n not in (None, "off")), "alex")
    perceptual = (("lpips_net", net),)
    for r in records.values():
        rule = r.get("success_rule")
        if rule:
            try:  # the record check took its form; its metric and direction are checked here
                return RunOptions(SuccessRule(**rule), perceptual)
            except (ValueError, LeakbenchError) as e:
                raise LeakbenchError(f"record {r.get('cell_id')}: success_rule {rule}: {e}"
                                     ) from None
        if r.get("success_psnr") is not None:
            return RunOptions(SuccessRule("psnr", r["success_psnr"]), perceptual)
    return RunOptions(perceptual=perceptual)


def cpu_conv_of(record: dict[str, Any]) -> str:
    """The CPU convolution kernels the record's attack ran on (they round differently);
    records from before ``--cpu-conv`` ran on torch's default."""
    conv = (record.get("provenance") or {}).get("cpu_conv")
    return conv if conv in CPU_CONV else DEFAULT_CPU_CONV


def cell_json(record: dict[str, Any]) -> dict[str, Any]:
    """The record as its cell's JSON, with the defaults the tables read into a record that
    lacks a field (an older one: no client, victim, grants or budget), so it re-runs the cell
    the tables show it as (:func:`bench.leaderboard.frames.record_client`)."""
    return {**record, "client": record_client(record), "victim": record_victim(record),
            "granted": record.get("granted") or [], "budget": record.get("budget") or {},
            "base_seed": record.get("base_seed", 0)}


def rerun_metric(name: str | None) -> type[Metric] | None:
    """The one per-item metric ``--metric`` names (None: the records' leaderboard metric), as
    ``diff`` resolves it (LPIPS's weights are checked once the records name their backbone:
    :func:`lpips_problem`)."""
    if name is None:
        return None
    chosen = resolve_per_item([name], "rerun")
    if len(chosen) > 1:
        raise LeakbenchError(f"--metric {name}: rerun compares one metric")
    return chosen[0]


def lpips_problem(metric: type[Metric] | None, options: RunOptions) -> str | None:
    """Why ``--metric lpips`` cannot be scored here: the weights of the backbone the records
    were scored with (:func:`options_of`) are not found, so every fresh value would be n/a."""
    if metric is None or metric.name != "lpips":
        return None
    missing = _lpips_missing(options)
    return None if missing is None else f"--metric lpips: {missing}"


def rule_problem(options: RunOptions, modality: str) -> str | None:
    """Why the success rule the re-run cells of ``modality`` are judged by (the records',
    :func:`options_of`) cannot be judged here: a rule on LPIPS without the weights of the
    records' backbone (``run`` refuses such a suite before any cell; each drawn cell had
    re-run into an error record, exit 0)."""
    if success_rule(modality, options.success).metric != "lpips":
        return None
    missing = _lpips_missing(options)
    return None if missing is None else f"the records' success rule is on lpips: {missing}"


def _lpips_missing(options: RunOptions) -> str | None:
    """LPIPS's one-line message where the weights of the records' backbone are not found
    here, else None."""
    available, message = lpips_status(dict(options.perceptual)["lpips_net"])
    return None if available else message


def component_problem(record: dict[str, Any]) -> str | None:
    """Why a record's cell would not build as recorded (a component's parameter its registry
    does not declare or refuses; a client, grant or budget the suite schema refuses), or
    None: else the cell re-ran into an error record ("ended error here"), exit 0."""
    parts = [("attacks", record["attack"]), ("archs", record["arch"]),
             ("datasets", record["dataset"]), *(("defenses", d) for d in record["defense"])]
    for kind, part in parts:
        try:
            validate_params(REGISTRIES[kind].get(part["name"]).params, part["params"],
                            part["name"])
        except LeakbenchError as err:
            return f"its {kind[:-1]} does not validate ({err}): {_WHY_INVALID}"
    for key in ("client", "budget"):
        if not isinstance(record.get(key) or {}, dict):
            return f"its {key} {short(record[key])} is not a mapping: {_WHY_INVALID}"
    cell = cell_json(record)
    if not isinstance(cell["granted"], list) or not all(
            isinstance(g, str) and g in CAPABILITIES for g in cell["granted"]):
        return f"its grants {short(cell['granted'])} are not capabilities: {_WHY_INVALID}"
    for key, params in (("client", CLIENT_PARAMS), ("budget", BUDGET_PARAMS)):
        try:
            validate_params(params, cell[key], key)
        except LeakbenchError as err:
            return f"its {key} does not validate ({err}): {_WHY_INVALID}"
    return None


_WHY_INVALID = "hand-edited, or written by another leakbench or with a plug-in not loaded"


def limit_of(record: dict[str, Any], timeout: float) -> float:
    """The limit a cell re-runs under: a ``timeout`` record's own (the one its ``error``
    names, where below ``timeout``), else ``timeout``."""
    own = timed_out_under(record.get("error")) if record.get("status") == "timeout" else None
    return min(own, timeout) if own is not None and own > 0 else timeout


def rerun(out_dir: Path, sample: int, metric: str | None = None, seed: int = 0,
          jobs: int | None = None, device: str = "cpu", timeout: float = 600.0,
          threads: int | None = None) -> list[Check]:
    """Re-run ``sample`` random cells that ran (not skipped) and compare each with its row
    on ``metric`` (default: the records' leaderboard metric; cells of another modality
    are not drawn)
    (``jobs``/``threads``: as :func:`bench.cores.plan_parallelism`; default a worker a core;
    ``timeout``: seconds a cell may run, or a ``timeout`` record's own limit where lower;
    ``jobs=0`` runs inline, with no limit)."""
    if sample < 1:
        raise LeakbenchError(f"--sample: expected at least 1 cell, got {sample}")
    chosen = rerun_metric(metric)  # a bad name is refused before the folder is read
    dev = resolve_device(device)
    jobs, threads = plan_parallelism(gpu_jobs(jobs, dev), threads, usable_cores())
    problem = cache_problem()  # as a run checks it: else each drawn cell ends in an error
    if problem:
        raise LeakbenchError(problem)
    records = load_records(Path(out_dir), quarantine=False)  # only read: nothing moves
    by_id = {r["cell_id"]: r for r in records}
    base = options_of(by_id)
    problem = lpips_problem(chosen, base)
    if problem:
        raise LeakbenchError(problem)
    df = records_frame(records)
    if df.empty:
        raise LeakbenchError(store_problem(Path(out_dir))
                             or f"no attack records under {Path(out_dir) / 'records'}")
    m = records_metric(df, chosen, "--metric")
    problem = rule_problem(base, m.modality)
    if problem:
        raise LeakbenchError(f"{out_dir}: {problem}")
    ran = df[df["status"].isin([s for s in STATUSES if s != "skipped"])
             & (df["modality"] == m.modality)]
    if ran.empty:  # every cell skipped: "Re-ran 0 cells", "0/0" read like a pass
        raise LeakbenchError(f"{out_dir}: no {m.modality} cell ran (every one is skipped, or "
                             f"of another modality): nothing to re-run")
    picks = random.Random(seed).sample(sorted(ran["cell_id"]), min(sample, len(ran)))
    for cid in picks:  # else each became an error record, counted as a re-run, exit 0
        problem = component_problem(by_id[cid])
        if problem:
            raise LeakbenchError(f"{out_dir}: record {cid}: {problem}")
    keyed = df.assign(**{c: df[c].fillna("") for c in ROW})
    rows = {cid: keyed[keyed["cell_id"] == cid].iloc[0] for cid in picks}
    cells = {cid: cell_from_json(cell_json(by_id[cid])) for cid in picks}
    # fresh outcomes by the cell object each came from: a record whose identity no longer
    # hashes to its cell_id (written by an older leakbench) comes back under another id
    owner = {id(cell): cid for cid, cell in cells.items()}
    if not (timeout > 0 and math.isfinite(timeout)):
        raise LeakbenchError(f"--timeout: expected a positive number of seconds, got {timeout}")
    # each on its own kernels, and a cell that timed out under its limit: a fresh "ok" after
    # 600 s had been compared with the intervals of a cell that never finished
    plan = {cid: (cpu_conv_of(by_id[cid]), limit_of(by_id[cid], timeout)) for cid in picks}
    fresh = {}
    for conv, limit in sorted(set(plan.values())):
        executor = make_executor("inline" if jobs <= 0 else "process", dev,
                                 limit, jobs, threads=threads)
        group = [cells[cid] for cid in picks if plan[cid] == (conv, limit)]
        outcomes = executor.run(group, replace(base, cpu_conv=conv))
        fresh.update({owner.get(id(c), o.record.cell_id): o.record for c, o in outcomes})
    checks = []
    for cid in picks:
        row = rows[cid]
        group = keyed[(keyed[ROW] == row[ROW]).all(axis=1)]
        scenario = keyed[(keyed[SCENARIO] == row[SCENARIO]).all(axis=1)]
        seeds = seed_values(group, m.name, m.higher_is_better, pool=scenario,  # as the tables
                            no_floor_value=m.no_floor_value)
        finite = seeds["value"].map(math.isfinite)
        iv = metric_interval(list(seeds["value"][finite]), m.share)  # the tables' ±
        # the prediction interval leaves the re-run seed out: the fresh value is a draw of
        # that seed, not independent of its committed value
        others = [v for i, v in seeds["value"][finite].items()
                  if group.loc[i, "cell_id"] != cid]
        rec = fresh[cid]
        value = (rec.metrics or {}).get(m.name) if rec.status == "ok" else \
            (getattr(rec, "floor_metrics", None) or {}).get(m.name)
        committed = (by_id[cid].get("metrics") or {}).get(m.name)
        checks.append(Check(cid, _row_label(row), iv.n, iv.mean,
                            _within(None if iv.low is None else (iv.low, iv.high), m.bounds()),
                            # a share's seeds all 0 or all 1 would make a point of the
                            # normal model's interval: no prediction for shares
                            None if m.share else _within(prediction_interval(others), m.bounds()),
                            committed, value,
                            rec.status, m.name, shared_pass(by_id[cid]), rec.error))
    return checks


def _within(interval: tuple[float, float] | None, bounds: tuple[float, float]
            ) -> tuple[float, float] | None:
    """``interval`` cut to the values the metric can take (a t-interval of PSNR near 0 dB
    reaches below it); no verdict changes, since no value lies outside."""
    if interval is None:
        return None
    return max(interval[0], bounds[0]), min(interval[1], bounds[1])


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, tuple):
        return f"[{fixed(v[0], digits)}, {fixed(v[1], digits)}]"
    if isinstance(v, bool):
        return "yes" if v else "no"
    return fixed(v, digits)


def report(checks: list[Check], metric: str | None = None) -> str:
    """A markdown table per re-run cell, then the fractions inside each interval (``metric``:
    the checks' own by default)."""
    metric = metric or (checks[0].metric if checks else "psnr")
    from bench.metrics import METRICS  # the registry: a plug-in's metric prints its digits

    d = METRICS.get(metric).cls.digits if metric in METRICS else 2  # as the tables print it
    table = [{"Cell": c.cell_id, "Row": c.row, "n": c.n, "Committed": _fmt(c.committed, d),
              "Fresh": _fmt(c.fresh, d), "Status": c.status, "95% CI of the mean": _fmt(c.ci, d),
              "Inside": _fmt(c.in_ci), "95% PI of one seed": _fmt(c.pi, d),
              "Inside PI": _fmt(c.in_pi)} for c in checks]
    lines = [f"Re-ran {len(checks)} cells on this machine ({metric}).", "",
             pipe_table(table), ""]
    for name, attr in (("CI of the row's mean", "in_ci"), ("PI of one new seed", "in_pi")):
        judged = [getattr(c, attr) for c in checks if getattr(c, attr) is not None]
        frac = f"{sum(judged)}/{len(judged)}" if judged else "0/0"
        lines.append(f"inside the committed 95% {name}: {frac}")
    for c in checks:  # the fresh value of a failed cell is its floor: say why it failed
        if c.status != "ok" and c.error and c.error.strip():
            why = c.error.strip().splitlines()[0][:200]
            lines.append(f"{c.cell_id} ended {c.status} here: {why}")
    same = sum(c.committed is not None and c.fresh == c.committed for c in checks)
    batched = sum(c.batched for c in checks)
    lines.append(f"bit-identical to the committed value: {same}/{len(checks)}" + (
        f" ({batched} of the cells ran in a batched pass with others and were re-run alone: "
        "not expected bit for bit)" if batched else ""))
    return "\n".join(lines)
