"""The CUDA path: every registered attack, defense and architecture on a GPU, batched trials
there, and a run through the process executor's spawned workers.

CI has no GPU, so these skip there (all but the first test, which checks on any machine that
a cell's CUDA arithmetic is set to strict float32); they are run on a lent GPU.

Tolerances: the CPU and the GPU sum in different orders. The client's update agrees to rel
1e-4 (float32 eps is 1.2e-7; TF32, which a cell turns off, would round a convolution's
inputs to 2**-11 relative and miss it). A trial alone and inside a batch of eight is
compared as tests/test_trials.py compares it on the CPU (batched kernels round differently
by a few ulps; the runs are kept short because gradient matching amplifies rounding).
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from test_conformance import tiny_cell

from bench.cells import RunOptions
from bench.cells.base import fix_float_mode
from bench.leaderboard import write_leaderboard
from bench.pipeline import run_cell
from bench.registry import ARCHS, ATTACKS, DEFENSES
from bench.runner import run_suite
from bench.scoring import SuccessRule
from bench.suite import attack_cells, iter_cells
from helpers import CPU, make_suite, observe_tiny

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device on this machine")
CUDA = torch.device("cuda")
LENET16 = {"datasets": [{"photos": {"size": 16}}], "archs": ["lenet"]}


def test_a_cell_turns_tf32_off_for_its_cuda_arithmetic():
    """On any machine: the flags are torch's, so a cell that ran after someone turned TF32
    on (torch's cuDNN default) leaves it off."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        fix_float_mode()
        assert not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = True
        (cell,) = attack_cells(make_suite(attacks=[{"ig": {"iterations": 1}}], **LENET16))
        assert run_cell(cell, CPU, RunOptions()).record.status == "ok"
        assert not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@needs_cuda
@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs_on_cuda_and_its_record_names_the_gpu(name, tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))  # a score model's cache, say
    cell = tiny_cell(name)
    record = run_cell(cell, CUDA, RunOptions(SuccessRule("psnr", 20.0))).record.to_json()
    assert record["status"] in ("ok", "diverged"), record.get("error")
    assert record["provenance"]["device"] == "cuda"
    assert record["provenance"]["device_name"] == torch.cuda.get_device_name(CUDA)
    assert record["memory_kind"] == "cuda_max_allocated" and record["peak_memory_bytes"] > 0
    assert record["timing"]["attack_seconds"] > 0
    assert record["grad_evals"] <= 7


@needs_cuda
@pytest.mark.parametrize("mode", ["fedsgd", "fedavg"])
@pytest.mark.parametrize("name", DEFENSES.names())
def test_every_defense_keeps_the_update_on_the_gpu(name, mode):
    cell = tiny_cell(defense=name, mode=mode)
    _, on_gpu = observe_tiny(cell, CUDA)
    _, on_cpu = observe_tiny(cell, CPU)
    assert [t.shape for t in on_gpu.update.tensors] == [t.shape for t in on_cpu.update.tensors]
    for t in on_gpu.update.tensors:
        assert t.device.type == "cuda" and bool(torch.isfinite(t).all())


def _image_archs() -> list[str]:
    return [a for a in ARCHS.names() if "image" in ARCHS.get(a).cls.modalities]


@needs_cuda
@pytest.mark.parametrize("arch", _image_archs())
def test_the_clients_update_on_the_gpu_is_the_cpus(arch):
    """Same data, model and seed on both devices: the undefended FedSGD update agrees to rel
    1e-4, as a whole and per tensor (TF32 convolutions would not: their rounding is ~1e-3).
    A tensor below 1e-3 of the whole update's norm is left to the whole's check: one that is
    zero in exact arithmetic (a convolution's bias before train-mode BatchNorm) holds
    rounding noise on both devices (on an H200: rel 1.24 of its own norm of 7.8e-6, against
    the whole's 9.4)."""
    fix_float_mode()
    cells = [c for batch in (2, 1) for c in attack_cells(make_suite(
        datasets=[{"photos": {"size": 32}}], archs=[arch], batch_size=batch))
        if c.skip_reason is None]
    assert cells, f"no photos cell for {arch}"
    _, gpu = observe_tiny(cells[0], CUDA)
    _, cpu = observe_tiny(cells[0], CPU)
    on_gpu = [g.cpu() for g in gpu.update.tensors]
    flat_gpu = torch.cat([g.flatten() for g in on_gpu])
    flat_cpu = torch.cat([c.flatten() for c in cpu.update.tensors])
    whole = float(flat_cpu.norm())
    assert float((flat_gpu - flat_cpu).norm()) < 1e-4 * whole, arch
    for g, c in zip(on_gpu, cpu.update.tensors):
        if float(c.norm()) >= 1e-3 * whole:
            error = float((g - c).norm() / c.norm())
            assert error < 1e-4, (arch, tuple(c.shape), error)


@needs_cuda
@pytest.mark.parametrize("attack", [{"ig": {"iterations": 12, "restarts": 2}},
                                    {"dlg": {"steps": 2, "max_eval_per_step": 5}},
                                    {"dlg": {"steps": 2, "max_eval_per_step": 5,
                                             "line_search": "strong_wolfe"}}])
def test_a_trial_alone_and_inside_a_batch_of_eight_agree_on_the_gpu(attack):
    fix_float_mode()
    suite = make_suite(seeds=8, attacks=[attack], **LENET16)
    cells = list(iter_cells(suite))
    attacker = cells[0].attack.build()
    together = attacker.reconstruct_trials([observe_tiny(c, CUDA)[0] for c in cells])
    for k in (0, 5):
        alone = attacker.reconstruct(observe_tiny(cells[k], CUDA)[0])
        assert together[k].data.device.type == "cuda"
        assert alone.grad_evals == together[k].grad_evals
        assert torch.allclose(alone.data, together[k].data, atol=1e-3), \
            (alone.data - together[k].data).abs().max()
        assert math.isclose(alone.info["final_loss"], together[k].info["final_loss"],
                            rel_tol=1e-3, abs_tol=1e-6)


@needs_cuda
def test_a_cuda_run_through_spawned_workers_groups_trials_and_writes_the_leaderboard(
        tmp_path):
    suite = make_suite(seeds=4, attacks=[{"ig": {"iterations": 20}},
                                         {"dlg": {"steps": 4}}],
                       defenses=["none", {"noise": {"scale": 0.01}}], **LENET16)
    summary = run_suite(suite, tmp_path, jobs=2, device="cuda", progress=False, trials=4)
    assert summary.counts.get("ok") == len(list(iter_cells(suite)))
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert {r["provenance"]["device"] for r in records} == {"cuda"}
    assert all(r["memory_kind"] == "cuda_max_allocated" for r in records)
    assert all(r["trial_batch"]["trials"] >= 2 for r in records)
    text = write_leaderboard(tmp_path).read_text()
    assert "## Quality versus compute" in text


@needs_cuda
def test_a_cuda_run_defaults_to_one_worker_per_gpu(tmp_path):
    """One worker per core had put every worker on cuda:0 (4 cells, one task each)."""
    suite = make_suite(seeds=4, **LENET16)
    run_suite(suite, tmp_path, device="cuda", progress=False, trials=1)
    records = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert len(records) == 4
    assert {r["provenance"]["workers"] for r in records} == {min(torch.cuda.device_count(), 4)}
