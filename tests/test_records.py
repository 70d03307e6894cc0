"""Typed records: every committed record loads into its type and writes back unchanged, and the
runner's records carry the documented header."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.records import RECORD_TYPES, AttackRecord, Record, UtilityRecord
from bench.store import load_records

RESULTS = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("suite", sorted(p.name for p in RESULTS.iterdir() if p.is_dir()))
def test_committed_records_round_trip_through_their_type(suite):
    for d in load_records(RESULTS / suite):
        record = Record.from_json(d)
        assert isinstance(record, RECORD_TYPES[d.get("kind", "attack")])
        assert record.to_json() == d
        assert not record.extra, f"{d['cell_id']}: undeclared fields {sorted(record.extra)}"


def test_unknown_fields_are_kept_not_dropped():
    d = {"kind": "utility", "suite": "s", "cell_id": "u1", "status": "ok", "from_the_future": 1}
    record = Record.from_json(d)
    assert isinstance(record, UtilityRecord) and record.extra == {"from_the_future": 1}
    assert record.to_json()["from_the_future"] == 1


def test_every_record_type_declares_the_common_header():
    common = {f.name for f in dataclasses.fields(Record)}
    for cls in (AttackRecord, UtilityRecord):
        assert common <= {f.name for f in dataclasses.fields(cls)}
