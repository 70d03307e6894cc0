"""The attacks' CPU convolution kernels (``--cpu-conv``): scoped to the attack, recorded in
the provenance, reused by ``rerun``, and refused in one line when unknown."""

from __future__ import annotations

import pytest
import torch

import bench.pipeline as pipeline
from bench.cells import RunOptions
from bench.cli import main
from bench.convolutions import check_cpu_conv, cpu_convolutions
from bench.registry import LeakbenchError
from bench.rerun import options_of
from bench.runner import run_suite
from bench.store import load_records
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
    assert seen == [choice == "onednn" and torch.backends.mkldnn.is_available()]
    assert outcome.record.provenance["cpu_conv"] == choice


def test_a_run_and_its_rerun_use_the_same_kernels(tmp_path) -> None:
    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=False, cpu_conv="native")
    records = {r["cell_id"]: r for r in load_records(tmp_path)}
    assert [r["provenance"]["cpu_conv"] for r in records.values()] == ["native"]
    assert options_of(records).cpu_conv == "native"
    assert options_of({}).cpu_conv == "onednn"  # records from before the option


def test_the_command_line_refuses_an_unknown_choice(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["run", "--cpu-conv", "mkl", "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and "--cpu-conv" in err[0], err
