"""Batched trials as a unit of work: attack cells that differ only by seed and defense, run as
one pass.

The runner groups such cells when their attack vectorises over trials
(:attr:`~bench.contracts.Attack.batched_trials`) and their defense chains leave the observed
batch the same (a secure aggregate observes K·B samples: its cells group among themselves);
each trial has its own observed update. An executor runs the group as one task and
gets one outcome per member, so records stay one per cell with the same ids. Each member is
observed, scored and recorded on its own (:func:`bench.pipeline.iter_trials`).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from bench import pipeline  # the module: pipeline imports this package's base
from bench.cells.attack import AttackCell
from bench.cells.base import (
    CellKind,
    RunOptions,
    cell_modality,
    failure_outcome,
    register_cell_kind,
)
from bench.contracts import observed_batch
from bench.json_values import dumps, unwritable
from bench.records import Outcome
from bench.registry import REGISTRIES
from bench.stages import STAGE
from bench.store import MAX_RECORD_BYTES, record_problem

DEFAULT_TRIALS = 16
"""Cells per batched pass unless ``--trials`` says otherwise (1: every cell alone)."""


@register_cell_kind("trials")
@dataclass(frozen=True)
class TrialsCell:
    """Attack cells that share everything but the seed and the defense, attacked in one
    vectorised pass."""

    cells: tuple[AttackCell, ...]
    skip_reason: str | None = None

    @property
    def suite(self) -> str:
        return self.cells[0].suite

    @property
    def cell_id(self) -> str:
        return "trials:" + "+".join(c.cell_id for c in self.cells)

    def describe(self) -> str:
        return f"{len(self.cells)} trials of {self.cells[0].describe()}"

    def to_json(self) -> dict[str, Any]:
        return {"kind": "trials", "cells": [c.to_json() for c in self.cells]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrialsCell:
        return cls(tuple(AttackCell.from_json(c) for c in d["cells"]))


def members(task: Any) -> tuple[CellKind, ...]:
    """The cells a task records: a group's members, or the cell itself."""
    return tuple(task.cells) if isinstance(task, TrialsCell) else (task,)


def run_task(task: Any, device: torch.device, options: RunOptions
             ) -> list[tuple[CellKind, Outcome]]:
    """Run a cell or a group: one ``(cell, outcome)`` per member, in member order."""
    done = dict(iter_task(task, device, options))
    return [(cell, done[i]) for i, cell in enumerate(members(task))]


def iter_task(task: Any, device: torch.device, options: RunOptions, marks: bool = False
              ) -> Iterator[tuple[int, Any]]:
    """Run a cell or a group: ``(member index, outcome)`` as each member finishes. A record
    that cannot be written as JSON (a plug-in's field) becomes that cell's error record here,
    where the cell ran, before a worker pipe or the store meets it: never a lost run. With
    ``marks``, an attack task's stage marks too (``(STAGE, stage)``,
    :func:`bench.pipeline.iter_trials`)."""
    cells = members(task)
    if isinstance(task, TrialsCell):
        done = pipeline.iter_trials(list(task.cells), device, options, marks)
    elif isinstance(task, AttackCell) and not task.skip_reason:  # as its run(), marked
        done = pipeline.iter_trials([task], device, options, marks)
    else:
        done = iter([(0, task.run(device, options))])
    for i, outcome in done:
        yield (i, outcome) if i == STAGE else (i, writable(cells[i], outcome, device, options))


def writable(cell: CellKind, outcome: Outcome, device: torch.device, options: RunOptions
             ) -> Outcome:
    """``outcome``, or an ``error`` outcome naming the field its record cannot write: the
    same record (its floor, input shape and clocks kept, so the seed still counts at its
    floor) with the offending top-level fields, metrics and pictures cleared."""
    record = outcome.record.to_json()
    problem = unwritable(record)
    if problem is None:
        problem = _refused(record)  # written, it would be quarantined by the next reader
        if problem is None:
            return outcome
        error = f"{problem}: the record check would refuse the cell's record"
    else:
        for key, value in record.items():
            if unwritable(value, key) is not None:
                record[key] = None
        error = f"{problem}: the cell's record cannot be written"
    record.update(status="error", error=error, metrics=None)
    for key in ("picture", "arrays", "curve", "text_pairs"):
        if key in record:
            record[key] = None
    for also_cleared in ((), ("floor_metrics",)):  # the grey guess may be what is out of range
        record.update(dict.fromkeys(also_cleared))
        if unwritable(record) is None and _refused(record) is None:
            return Outcome(type(outcome.record).from_json(record))
    return failure_outcome(cell, "error", error, options, 0.0, device)


def _refused(record: dict[str, Any]) -> str | None:
    """What the store's record check (:func:`bench.store.record_problem`, every reader's)
    finds wrong with ``record`` as it would be written: a plug-in metric's value outside its
    declared range, say; None when it passes."""
    text = dumps(record)  # as the store writes it (unwritable: None)
    if len(text.encode()) > MAX_RECORD_BYTES:
        return f"{len(text.encode())} bytes, larger than a record may be ({MAX_RECORD_BYTES})"
    written = json.loads(text)
    return record_problem(written, written.get("cell_id"))


def _batchable(cell: Any) -> bool:
    if not isinstance(cell, AttackCell) or cell.skip_reason:
        return False
    attack = REGISTRIES["attacks"].get(cell.attack.name).cls
    modality = cell_modality(cell)
    batched = getattr(attack, "batched_trials", frozenset())
    if isinstance(batched, str):  # one modality named
        batched = frozenset({batched})
    elif not isinstance(batched, Collection):  # the form before modalities (a plugin's flag,
        batched = frozenset({"image"}) if batched else frozenset()  # True or None, 0, 1):
    return modality in batched  # images only, the engine's domain


def group_trials(cells: Iterable[Any], size: int = DEFAULT_TRIALS) -> list[Any]:
    """Cells with groups of batchable attack cells that differ only by seed and defense (with
    the same observed batch), each group cut into consecutive passes of ``size`` (10 cells at
    size 8: 8 and 2), in the order of each group's first cell; other cells stay alone. The
    passes depend on the cells and ``size`` only, never on the workers: which cells share a
    pass changes float32 rounding, which a chaotic optimiser amplifies, so a cell's metrics
    must not change with ``--jobs`` or the executor (the committed results' passes are these)."""
    if size < 1:
        raise ValueError(f"trials per pass must be at least 1, got {size}")
    tasks: list[Any] = []
    groups: dict[str, list[AttackCell]] = {}
    for cell in cells:
        if size == 1 or not _batchable(cell):
            tasks.append(cell)
            continue
        ident = cell.identity()
        key = repr(sorted((k, repr(v)) for k, v in ident.items() if k not in ("seed", "defense")))
        chain = [d.build() for d in cell.defense]
        # a protocol (secure aggregation) sets what the server observes: its settings too
        protocol = [repr(s.as_dict()) for s, d in zip(cell.defense, chain) if d.level == "protocol"]
        key += f"|observed batch {observed_batch(chain, cell.batch_size)}|{protocol}"
        if key not in groups:
            groups[key] = []
            tasks.append(groups[key])
        groups[key].append(cell)
    out: list[Any] = []
    for t in tasks:
        if not isinstance(t, list):
            out.append(t)
            continue
        out += [_as_task(t[i:i + size]) for i in range(0, len(t), size)]
    return out


def _as_task(item: Any) -> Any:
    if isinstance(item, list):
        return item[0] if len(item) == 1 else TrialsCell(tuple(item))
    return item
