"""Defects found by session 60's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.json_values import unwritable
from bench.records import record_modality
from bench.store import QUARANTINE, load_records, read_record, record_problem

TEXT_RECORDS = Path(__file__).resolve().parent.parent / "results" / "text" / "records"


def _ok_text_record() -> dict:
    for path in sorted(TEXT_RECORDS.glob("*.json")):
        record = json.loads(path.read_text())
        if record["status"] == "ok" and record.get("kind", "attack") == "attack":
            return record
    raise AssertionError("results/text has no ok attack record")


def test_a_text_record_of_a_dataset_this_machine_lacks_is_sound(tmp_path) -> None:
    """An unregistered dataset (a plug-in not installed here) was read as an image dataset,
    so a sound text record, ranked by ROUGE-1 and holding no PSNR, was called damaged and
    moved to quarantine by leaderboard, export and table, and left out by merge."""
    record = _ok_text_record()
    record["dataset"] = {**record["dataset"], "name": "my_plugin_corpus"}
    assert record_modality(record) == "text"
    assert record_problem(record) is None
    path = tmp_path / "records" / f"{record['cell_id']}.json"
    path.parent.mkdir()
    path.write_text(json.dumps(record))
    assert read_record(path)[1] is None
    image = {"dataset": {"name": "my_plugin_photos"}, "metrics": {"psnr": 12.0, "ssim": 0.1}}
    assert record_modality(image) == "image"
    assert record_modality({"dataset": {"name": "my_plugin_photos"}}) == "image"


def test_a_lone_surrogate_is_unwritable_and_undecodable_bytes_are_not() -> None:
    """JSON reads "\\ud800", which UTF-8 cannot write: the store had accepted such a record and
    the markdown and CSV writers then crashed with a traceback (exit 1)."""
    assert unwritable({"defense_label": "none\ud800"}) == (
        "record.defense_label holds a lone surrogate, which UTF-8 cannot write")
    assert unwritable({"x\ud83d": 1}) is not None  # a key too
    assert unwritable({"root": "/data/caf\udce9"}) is None  # a path's undecodable byte
    assert unwritable({"label": "café ✓ 文"}) is None


@pytest.fixture(scope="module")
def quick_copy(tmp_path_factory) -> Path:
    from bench.runner import run_suite
    from helpers import make_suite

    out = tmp_path_factory.mktemp("clean")
    run_suite(make_suite(seeds=2), out, jobs=0, device="cpu", progress=False)
    return out


@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_a_record_with_a_lone_surrogate_is_quarantined_not_a_traceback(
        command: str, quick_copy: Path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    shutil.copytree(quick_copy, out)
    path = sorted((out / "records").glob("*.json"))[0]
    text = path.read_text().replace('"defense_label": "none"', '"defense_label": "none\\ud800"')
    assert "\\ud800" in text
    path.write_text(text)
    assert main([command, str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "lone surrogate" in err
    assert (out / "records" / QUARANTINE / path.name).is_file()
    assert len(load_records(out)) == 1
