"""The attacks' CPU convolution kernels (``--cpu-conv``): scoped to the attack, recorded in
the provenance, reused by ``rerun``, and refused in one line when unknown."""

from __future__ import annotations

import json

import pytest
import torch

import bench.pipeline as pipeline
from bench.cells import RunOptions
from bench.cli import main
from bench.convolutions import check_cpu_conv, cpu_convolutions
from bench.executors import failure_outcome
from bench.registry import LeakbenchError
from bench.rerun import cpu_conv_of, rerun
from bench.runner import run_suite
from bench.suite import iter_cells
from helpers import make_suite

CPU = torch.device("cpu")


def test_native_turns_onednn_off_inside_and_restores_it() -> None:
    before = torch.backends.mkldnn.enabled
    with cpu_convolutions("native", CPU):
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before
    with cpu_convolutions("onednn", CPU):
        assert torch.backends.mkldnn.enabled == before
    with cpu_convolutions("native", torch.device("cuda")):  # a CUDA run is left alone
        assert torch.backends.mkldnn.enabled == before


def test_an_unknown_choice_is_one_line() -> None:
    with pytest.raises(LeakbenchError, match="--cpu-conv: expected one of onednn, native"):
        check_cpu_conv("mkl")
    with pytest.raises(LeakbenchError):
        with cpu_convolutions("", CPU):
            pass


@pytest.mark.parametrize("choice", ["onednn", "native"])
def test_the_attack_runs_on_the_chosen_kernels_and_the_record_says_so(choice, monkeypatch):
    seen = []
    real = pipeline.attack

    def spy(cell, obs):
        seen.append(torch.backends.mkldnn.enabled)
        return real(cell, obs)

    monkeypatch.setattr(pipeline, "attack", spy)
    cell = next(iter(iter_cells(make_suite())))
    outcome = pipeline.run_cell(cell, CPU, RunOptions(cpu_conv=choice))
    assert outcome.record.status == "ok", outcome.record.error
    assert seen == [choice == "onednn"]
    assert outcome.record.provenance["cpu_conv"] == choice


def test_a_run_records_its_kernels_and_a_rerun_reruns_each_cell_on_its_own(tmp_path,
                                                                          monkeypatch):
    run_suite(make_suite(seeds=2), tmp_path, jobs=0, device="cpu", progress=False,
              cpu_conv="native")
    paths = sorted((tmp_path / "records").glob("*.json"))
    records = [json.loads(p.read_text()) for p in paths]
    assert [r["provenance"]["cpu_conv"] for r in records] == ["native", "native"]
    del records[0]["provenance"]["cpu_conv"]  # a record from before the option: oneDNN
    paths[0].write_text(json.dumps(records[0]))
    assert [cpu_conv_of(r) for r in records] == ["onednn", "native"]
    seen = {}
    real = pipeline.attack

    def spy(cell, obs):
        seen[cell.cell_id] = torch.backends.mkldnn.enabled
        return real(cell, obs)

    monkeypatch.setattr(pipeline, "attack", spy)
    rerun(tmp_path, 2, jobs=0)
    assert seen == {records[0]["cell_id"]: True, records[1]["cell_id"]: False}


def test_the_setting_is_restored_when_the_attack_raises() -> None:
    before = torch.backends.mkldnn.enabled
    with pytest.raises(RuntimeError):
        with cpu_convolutions("native", CPU):
            raise RuntimeError("the attack failed")
    assert torch.backends.mkldnn.enabled == before


def test_failure_records_say_which_kernels_too() -> None:
    cell = next(iter(iter_cells(make_suite())))
    outcome = failure_outcome(cell, "timeout", "exceeded", RunOptions(cpu_conv="native"), 1.0)
    assert outcome.record.provenance["cpu_conv"] == "native"


def test_the_command_line_refuses_an_unknown_choice(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--cpu-conv", "mkl", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--cpu-conv" in err[0], err
