"""Records → pandas frames: one row per attack cell, one per utility run, and the scenario
groups every table is built per."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pandas as pd

from bench.identity import Spec
from bench.metrics import list_metrics
from bench.paths import store_problem
from bench.records import record_modality
from bench.registry import DEFENSES, LeakbenchError
from bench.suite.schema import CLIENT_PARAMS

CLIENT_DEFAULTS = {p.name: p.default for p in CLIENT_PARAMS}

SCENARIO = ["dataset", "arch", "batch_size", "mode", "bn_mode", "victim"]
FAILED = ("error", "timeout")


def metric_columns() -> list[str]:
    """The frame columns of the per-item metrics: each one's mean, then each image metric's
    worst pair (``psnr``, …, ``psnr_worst``, …), in the registry's order."""
    per_item = list_metrics(kind="per_item")
    return [m.name for m in per_item] + [f"{m.name}_worst" for m in per_item
                                         if m.inputs == "images"]


def records_frame(records: list[dict[str, Any]], labels: dict[str, str] | None = None
                  ) -> pd.DataFrame:
    """One flat row per cell record (utility records excluded), ordered by cell id; the
    ``floor_<metric>`` columns are the record's ``floor_metrics`` (a mid-grey guess's
    scores, which a diverged or failed seed counts at), None where a record has none.
    ``labels``: the rows' attack labels (:func:`attack_row_labels`), when they must agree
    with another frame's (two folders compared); by default those of ``records``."""
    columns = metric_columns()
    floor_names = [m.name for m in list_metrics(kind="per_item")]
    labels = attack_row_labels(records) if labels is None else labels
    rows = []
    for r in records:
        if r.get("kind", "attack") != "attack":
            continue
        timing = r.get("timing") or {}
        client = record_client(r)
        metrics = r.get("metrics") or {}
        floors = r.get("floor_metrics") or {}
        rows.append({
            "cell_id": r["cell_id"], "suite": r["suite"],
            "attack": row_label(r, labels), "defense": r["defense_label"],
            "arch": r["arch_label"], "dataset": r["dataset_label"],
            "batch_size": r["batch_size"], "seed": r["seed"], "status": r["status"],
            **{c: metrics.get(c) for c in columns},
            "success": metrics.get("success"),
            **{f"floor_{m}": floors.get(m) for m in floor_names},
            "attack_seconds": timing.get("attack_seconds"),
            "attack_name": r["attack"]["name"],
            "defense_name": "+".join(d["name"] for d in r["defense"]),
            "arch_name": r["arch"]["name"], "dataset_name": r["dataset"]["name"],
            "mode": client_label(client), "mode_name": client.get("mode"),
            "bn_mode": client.get("bn_mode"),
            "victim": record_victim(r),
            "scenario_seed": (r.get("derived_seeds") or {}).get("scenario"),
            "granted": ",".join(r.get("granted") or []),
            "iterations": r.get("iterations"), "grad_evals": r.get("grad_evals"),
            "setup_seconds": timing.get("setup_seconds"),
            "score_seconds": timing.get("score_seconds"),
            "peak_memory_bytes": r.get("peak_memory_bytes"), "memory_kind": r.get("memory_kind"),
            **provenance_columns(r),
            "epsilon": (r.get("defense_info") or {}).get("epsilon"),
            "epsilon_note": (r.get("defense_info") or {}).get("epsilon_note"),
            "error": r.get("error"),
            "picture": r.get("picture"),
            "modality": record_modality(r), "text_pairs": r.get("text_pairs"),
            "success_psnr": r.get("success_psnr"), "success_rule": r.get("success_rule"),
            "strength": defense_strength(r["defense"]), "line": strength_line(r["defense"]),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values("cell_id", kind="stable").reset_index(drop=True)


def attack_row_labels(records: list[dict[str, Any]]) -> dict[str, str]:
    """Per attack record's cell id, the attack label of its table row (read it with
    :func:`row_label`): the record's ``attack_label``, followed by its grants, budget or
    success rule where records of the same scenario and attack label differ in them (a
    folder merged from suites with other threat models or caps: ``dlg(steps=100)
    [granted labels]``), so that such cells never pool into one row. Decided per scenario,
    not per defense, so that an attack keeps one label under every defense."""
    groups: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    for r in records:
        if r.get("kind", "attack") != "attack":
            continue
        row = (*record_scenario(r), r["attack_label"])
        if r.get("cell_id") is not None:
            groups[row][r["cell_id"]] = _threat(r)
    labels = {}
    for row, threats in groups.items():
        differ = [i for i, parts in enumerate(zip(*threats.values())) if len(set(parts)) > 1]
        for cid, threat in threats.items():
            shown = "; ".join(threat[i] for i in differ)
            labels[cid] = f"{row[-1]} [{shown}]" if differ else row[-1]
    return labels


LABELLED = (("attack", "attack_label"), ("defense", "defense_label"), ("arch", "arch_label"),
            ("dataset", "dataset_label"))


def label_splits(records: list[dict[str, Any]]) -> list[str]:
    """One line per component configuration that the records label twice (``prune`` and
    ``prune(ratio=0.2)``: suites that spelled it differently, merged into one folder); the
    tables key rows on labels, so such a configuration fills two rows."""
    labels: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in records:
        for field, label in LABELLED:
            config, name = r.get(field), r.get(label)
            if config is None or not isinstance(name, str):
                continue
            links = config if isinstance(config, list) else [config]
            key = repr([(d.get("name"), sorted((d.get("params") or {}).items()))
                        for d in links if isinstance(d, dict)])
            labels[field, key].add(name)
    return [f"{field}: {' and '.join(repr(x) for x in sorted(names))} name one configuration "
            "(suites that spelled it differently); the tables list them as separate rows"
            for (field, _), names in sorted(labels.items()) if len(names) > 1]


def unregistered_metrics(records: list[dict[str, Any]]) -> list[str]:
    """Per-item metrics the records hold (a value with its ``_worst``) that no installed
    metric defines: a plug-in's, not installed here. The tables have no column for them."""
    from bench.metrics import METRICS  # the registry, with its plug-ins

    held = {k.removesuffix("_worst") for r in records
            for k in (r.get("metrics") if isinstance(r.get("metrics"), dict) else {})
            if isinstance(k, str) and k.endswith("_worst")}
    return sorted(held - set(METRICS.names()))


def shared_pass(record: dict[str, Any]) -> bool:
    """Whether ``record``'s cell ran in a batched pass with other cells: not alone, and not
    one of a failed pass's cells, which re-ran alone (``trial_batch.fallback``)."""
    batch = record.get("trial_batch") or {}
    return len(batch.get("cells") or []) > 1 and not batch.get("fallback")


def row_label(record: dict[str, Any], labels: dict[str, str]) -> str:
    """The attack label of ``record``'s table row, from :func:`attack_row_labels`."""
    return labels.get(record.get("cell_id"), record["attack_label"])  # type: ignore[arg-type]


def _threat(record: dict[str, Any]) -> tuple[str, ...]:
    """What an attack cell was granted, its budget and success rule, as short texts."""
    granted = ",".join(sorted(map(str, record.get("granted") or []))) or "none"
    budget = record.get("budget")
    budget = budget if isinstance(budget, dict) else {}
    caps = ",".join(f"{k}={budget[k]}" for k in sorted(budget)) or "no cap"
    rule = record.get("success_rule")
    rule = rule if isinstance(rule, dict) else {}
    if rule.get("at_least") is not None:
        success = f"success {rule.get('metric')}>={rule['at_least']}"
    elif rule.get("at_most") is not None:
        success = f"success {rule.get('metric')}<={rule['at_most']}"
    else:
        success = f"success psnr>={record.get('success_psnr')}"
    return (f"granted {granted}", caps, success)


def record_client(record: dict[str, Any]) -> dict[str, Any]:
    """The record's client with its defaults filled in: a record without a client (or with
    null fields) ran the defaults (absent and null read the same), and must share their
    scenario, title and files."""
    given = record.get("client") or {}
    return {**CLIENT_DEFAULTS, **{k: v for k, v in given.items() if v is not None}}


def record_scenario(record: dict[str, Any]) -> tuple:
    """An attack record's scenario key, in :data:`SCENARIO`'s order (dataset, arch, batch
    size, client, BN mode, victim), as the tables, curves and ``diff`` key their rows."""
    client = record_client(record)
    return (record.get("dataset_label"), record.get("arch_label"), record.get("batch_size"),
            client_label(client), client.get("bn_mode"), record_victim(record))


def record_victim(record: dict[str, Any]) -> str:
    """The record's victim state, "init" where it has none."""
    return record.get("victim") or "init"


class NoAttackRecords(LeakbenchError):
    """A results folder holds records, only utility ones: no leaderboard to write (``run``
    of a suite whose attack cells are all excluded warns of it and exits 0)."""


def no_attack_records(out_dir: object, records: list[dict[str, Any]]) -> str:
    """Why a leaderboard of ``out_dir`` has nothing to rank: no records, or only utility
    ones (which the site lists cell by cell)."""
    if not records:
        return store_problem(Path(str(out_dir))) or f"no records under {out_dir}/records"
    return (f"no attack records under {out_dir}/records (only {len(records)} utility "
            "record(s): `leakbench site` lists them cell by cell)")


def client_label(client: dict[str, Any]) -> str | None:
    """The client as a scenario label: its mode, with the parameters that differ from their
    defaults (``fedavg(local_epochs=3)``), so that two clients never share a table row; BN
    mode has its own column."""
    mode = client.get("mode")
    if mode is None:
        return None
    shown = [f"{p.name}={client[p.name]}" for p in CLIENT_PARAMS
             if p.name not in ("mode", "bn_mode") and p.name in client
             and client[p.name] != p.default]
    return f"{mode}({','.join(shown)})" if shown else mode


def _strength_key(chain: list[dict[str, Any]]) -> str | None:
    """The main parameter's name of a single registered defense (its ``strength``
    attribute, else its first numeric parameter that is set); None for chains."""
    if len(chain) != 1 or chain[0]["name"] not in DEFENSES:
        return None
    cls, params = DEFENSES.get(chain[0]["name"]).cls, chain[0]["params"]
    key = getattr(cls, "strength", None)
    if key is None:  # the first numeric parameter set (noise: its scale, else its variance)
        numeric = [p.name for p in cls.params
                   if p.type in (float, int) and params.get(p.name) is not None]
        key = numeric[0] if numeric else None
    return key


def defense_strength(chain: list[dict[str, Any]]) -> float | None:
    """The main parameter of a single defense (:func:`_strength_key`), for
    PSNR-against-strength plots; None for chains and ``none``."""
    key = _strength_key(chain)
    value = chain[0]["params"].get(key) if key else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def strength_line(chain: list[dict[str, Any]]) -> str | None:
    """The defense's label without its main parameter: one line of a PSNR-against-strength
    plot (``noise(distribution=laplace)`` apart from Gaussian noise, which one "noise" line
    had zig-zagged between)."""
    key = _strength_key(chain)
    if key is None:
        return None
    d = chain[0]
    return Spec(d["name"], tuple(sorted((k, v) for k, v in d["params"].items() if k != key)),
                "defenses", tuple(k for k in d.get("shown") or () if k != key)).label


def utility_setting(config: dict[str, Any]) -> str:
    """A utility record's training setting as one key: ``batch_size=32, lr=0.3, steps=300``."""
    return ", ".join(f"{k}={v}" for k, v in sorted(config.items()))


ENVIRONMENT = ("device", "device_name", "torch", "leakbench", "git_commit")
"""The provenance fields a leaderboard's Environment lines name, as frame columns."""


def provenance_columns(record: dict[str, Any]) -> dict[str, Any]:
    """The record's :data:`ENVIRONMENT` fields (from its provenance, not this machine)."""
    prov = record.get("provenance") or {}
    return {k: prov.get(k) for k in ENVIRONMENT}


def utility_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per utility record: test accuracy and update cosine after defended training."""
    rows = []
    for r in records:
        if r.get("kind") != "utility":
            continue
        m = r.get("metrics") or {}
        rows.append({"dataset": r["dataset_label"], "arch": r["arch_label"],
                     "defense": r["defense_label"], "seed": r["seed"], "status": r["status"],
                     "accuracy": m.get("accuracy"), "update_cosine": m.get("update_cosine"),
                     "chance": m.get("chance"), "cell_id": r["cell_id"],
                     "epsilon": (m.get("privacy") or {}).get("epsilon"),
                     "scenario": (r.get("derived_seeds") or {}).get("scenario"),
                     "setting": utility_setting(r.get("utility")
                                                if isinstance(r.get("utility"), dict) else {}),
                     **provenance_columns(r)})
    cols = ["dataset", "arch", "defense", "seed", "status", "accuracy", "update_cosine",
            "chance", "cell_id", "epsilon", "scenario", "setting", *ENVIRONMENT]
    return pd.DataFrame(rows, columns=cols).sort_values("cell_id", kind="stable")


def scenarios(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """The cells grouped by scenario (dataset, arch, batch size, mode, BN mode, victim),
    in a stable order; every table and figure is per scenario."""
    keyed = df.assign(**{c: df[c].fillna("") for c in ["mode", "bn_mode", "victim"]})
    return [(key, g) for key, g in keyed.groupby(SCENARIO, sort=True)]


def scenario_title(key: tuple) -> str:
    """A scenario key as a title: digits(size=16) · mlp · batch 1 (defaults left out)."""
    dataset, arch, bs, mode, bn_mode, victim = key
    parts = [f"{dataset}", f"{arch}", f"batch {bs}"]
    if mode and mode != "fedsgd":
        parts.append(mode)  # with its non-default parameters: fedavg(local_epochs=3)
    if bn_mode and bn_mode != "train":
        parts.append(f"BN {bn_mode}")
    if victim and victim != "init":
        parts.append(f"victim {victim}")
    return " · ".join(parts)


_PLAIN_PART = re.compile(r"[A-Za-z0-9_.()=,:]+|batch \d+|BN \w+|victim \S+")


def scenario_slug(key: tuple) -> str:
    """A file-name form of a scenario title: digits(size=16) · mlp · batch 1 → digits_size_16_…

    Where a part of the title holds other characters than labels are made of (a folder named
    faces-small beside one named faces_small: both read faces_small, and the two scenarios
    had shared one figure file and one gallery page), a hash of the whole title is appended,
    so that such titles get names of their own."""
    title = scenario_title(key)
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", title).strip("_")
    if all(_PLAIN_PART.fullmatch(part) for part in title.split(" · ")):
        return slug
    return f"{slug}-{hashlib.sha256(title.encode()).hexdigest()[:8]}"
