"""Defects found by session 60's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.contracts import Reconstruction
from bench.json_values import unwritable
from bench.records import record_modality
from bench.registry import ATTACKS
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
    skipped = {"dataset": {"name": "my_plugin_corpus"}, "status": "skipped", "metrics": None,
               "success_rule": {"metric": "rouge1", "at_least": 0.5, "at_most": None}}
    assert record_modality(skipped) == "text"  # one had made a text folder read as mixed


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


@pytest.mark.parametrize("name", sorted(ATTACKS.names()))
def test_every_attack_keeps_within_max_iterations(name, tmp_path, monkeypatch) -> None:
    """The harness now refuses counts over the suite's caps (next test), so every built-in
    must keep within them: ``max_grad_evals`` is the conformance test's, ``max_iterations``
    this one's."""
    from test_conformance import tiny_cell

    from bench.returns import checked_reconstructions
    from helpers import observe_tiny

    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))
    cell = tiny_cell(name)
    obs, _ = observe_tiny(cell)
    obs.max_iterations = 2
    attacker = ATTACKS.get(name).cls(**cell.attack.kwargs)
    (recon,) = checked_reconstructions(attacker, [attacker.reconstruct(obs)], [obs],
                                       "reconstruct")
    assert recon.iterations <= 2 or not attacker.counts_iterations  # a closed form's layers


def test_counts_over_the_suites_caps_are_an_error_naming_the_attack() -> None:
    from types import SimpleNamespace

    from test_conformance import tiny_cell

    from bench.returns import checked_reconstructions
    from helpers import observe_tiny

    obs, _ = observe_tiny(tiny_cell("ig"))
    data = torch.zeros(obs.batch_size, *obs.domain.shape)
    attacker = SimpleNamespace(registry_name="greedy")
    obs.max_grad_evals, obs.max_iterations = 10, 5
    within = Reconstruction(data, grad_evals=10, iterations=5)
    assert checked_reconstructions(attacker, [within], [obs], "reconstruct") == [within]
    for counts, cap in (({"grad_evals": 10**6}, "max_grad_evals of 10"),
                        ({"iterations": 6}, "max_iterations of 5")):
        with pytest.raises(ValueError, match=f"attack greedy: it reported .*, over the "
                                             f"suite's {cap}"):
            checked_reconstructions(attacker, [Reconstruction(data, **counts)], [obs],
                                    "reconstruct")
    obs.max_grad_evals = obs.max_iterations = None  # no caps: any count stands
    assert checked_reconstructions(attacker, [Reconstruction(data, grad_evals=10**6)], [obs])


@pytest.mark.parametrize("name", ["halve+noise", "chain"])
def test_a_defense_name_a_chain_label_or_keyword_would_shadow_is_refused(name) -> None:
    """A defense named ``halve+noise`` pooled with the chain ``[halve, noise]`` into one row
    (chain labels join links with '+'); one named ``chain`` loaded and was listed, and no suite
    could name it (``{chain: ...}`` is the keyword). Other kinds keep '+'."""
    from bench.contracts import Attack, Defense
    from bench.registry import ATTACKS, DEFENSES, register_attack, register_defense

    cls = type("Shadow", (Defense,), {"__doc__": "A name under test."})
    with pytest.raises(TypeError, match=f"defense '{name}': the name '{name}' is not one a "
                                        "defense can take".replace("+", r"\+")):
        register_defense(name)(cls)
    assert name not in DEFENSES
    attack = type("Plus", (Attack,), {"__doc__": "A name under test."})
    try:
        register_attack("dlg+tv")(attack)
        assert "dlg+tv" in ATTACKS
    finally:
        ATTACKS._entries.pop("dlg+tv", None)


def test_a_batch_transform_of_another_shape_is_named_where_it_returns() -> None:
    """Another x shape or a y of another length had surfaced in the model or the loss
    ("mat1 and mat2 shapes cannot be multiplied"), naming no defense."""
    from types import SimpleNamespace

    from bench.returns import checked_batch

    halve = SimpleNamespace(registry_name="halve")
    x, y = torch.zeros(2, 1, 4, 4), torch.tensor([0, 1])
    soft = torch.full((2, 3), 1 / 3)
    assert checked_batch(halve, (x * 0.5, soft), x)[1] is soft  # soft label rows stand
    for out in ((x[:, :, :2], y), (x, y[:1]), (x[:1], y[:1]), (x, torch.tensor(0))):
        with pytest.raises(ValueError, match=r"defense halve: transform_batch returned x of "
                                             r"shape .* expected x of shape \(2, 1, 4, 4\)"):
            checked_batch(halve, out, x)


def test_a_reconstruction_on_the_meta_device_is_the_attacks_error() -> None:
    """It had failed in scoring ("score: NotImplementedError: Cannot copy out of meta
    tensor"), blaming the wrong stage and no attack."""
    from types import SimpleNamespace

    from test_conformance import tiny_cell

    from bench.returns import checked_reconstructions
    from helpers import observe_tiny

    obs, _ = observe_tiny(tiny_cell("ig"))
    data = torch.zeros(obs.batch_size, *obs.domain.shape, device="meta")
    with pytest.raises(ValueError, match="attack ghost: its Reconstruction.data is on the "
                                         "meta device"):
        checked_reconstructions(SimpleNamespace(registry_name="ghost"), [Reconstruction(data)],
                                [obs], "reconstruct")


def test_a_plugin_that_registers_nothing_is_named_once_not_once_per_worker(tmp_path) -> None:
    """Each process worker loads the plug-ins again and had repeated the driver's warning."""
    from test_hunt8 import FORGOT

    from helpers import run_cli, write_plugin, write_suite

    root = write_plugin(tmp_path, "leakbench_forgot", FORGOT,
                        "[leakbench.attacks]\nforgot = leakbench_forgot:Forgot\n")
    suite = write_suite(tmp_path / "tiny.yaml")
    out = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--jobs", "1",
                  extra_path=root)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("registered no attack") == 1, out.stderr


def test_workers_on_cuda_spread_over_the_gpus_and_default_to_one_each(monkeypatch,
                                                                        capsys) -> None:
    """``--device cuda`` had started one worker per core, every one on cuda:0 (a CUDA context
    and cache each; each cell's timed attack also ran its neighbours' kernels)."""
    from bench.executors.base import worker_device
    from bench.runner import gpu_jobs

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    cuda = torch.device("cuda")
    assert [worker_device(cuda, i) for i in range(4)] == [
        torch.device("cuda", i) for i in (0, 1, 2, 0)]
    assert worker_device(torch.device("cuda", 2), 0) == torch.device("cuda", 2)
    assert worker_device(torch.device("cpu"), 1) == torch.device("cpu")
    assert gpu_jobs(None, cuda) == 3 and gpu_jobs(None, torch.device("cuda", 1)) == 1
    assert gpu_jobs(2, cuda) == 2 and capsys.readouterr().err == ""
    assert gpu_jobs(8, cuda) == 8
    assert "--jobs 8 on 3 GPU(s): workers share a GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert worker_device(cuda, 1) == cuda


def test_a_finished_task_hands_its_gpu_cache_back(monkeypatch) -> None:
    from bench.executors.base import release_device_cache

    calls = []
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append(1))
    release_device_cache(torch.device("cpu"))
    assert calls == []
    release_device_cache(torch.device("cuda", 0))
    assert calls == [1]


def test_soteria_does_not_take_out_of_memory_for_a_missing_batching_rule(monkeypatch) -> None:
    """An out-of-memory in the batched Jacobian had fallen back to one backward pass per
    feature (up to 256 times slower), silently: it is a RuntimeError too."""
    from bench.registry import ARCHS
    from defenses import soteria

    real = torch.autograd.grad

    def grad(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(*args, **kwargs)

    model = ARCHS.get("lenet").cls(width=4).build((1, 12, 12), 10)
    x = torch.rand(2, 1, 12, 12)
    assert soteria.soteria_scores(model, x).shape[0] > 0  # the batched pass, unpatched
    monkeypatch.setattr(torch.autograd, "grad", grad)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        soteria.soteria_scores(model, x)


def test_a_rerun_on_cuda_defaults_to_one_worker_per_gpu(monkeypatch, tmp_path) -> None:
    """``rerun --device cuda`` had planned a worker per core, every one on cuda:0."""
    import bench.rerun as rerun_module

    planned = []

    def plan(jobs, threads, cores):
        planned.append(jobs)
        raise RuntimeError("planned")

    monkeypatch.setattr(rerun_module, "resolve_device", lambda name: torch.device(name))
    monkeypatch.setattr(rerun_module, "plan_parallelism", plan)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device, jobs, expected in (("cuda", None, 2), ("cuda", 0, 0), ("cpu", None, None)):
        with pytest.raises(RuntimeError, match="planned"):
            rerun_module.rerun(tmp_path, 1, jobs=jobs, device=device)
        assert planned.pop() == expected


def test_a_worker_whose_gpu_fails_at_warm_up_leaves_the_error_to_its_cell(monkeypatch) -> None:
    """An unguarded CUDA context creation killed a process worker before its first task (its
    cells dead-worker records without the CUDA message) and an inline run with a traceback."""
    from bench.executors import base

    def empty(*args, **kwargs):
        raise RuntimeError("CUDA error: no kernel image is available (simulated)")

    monkeypatch.setattr(base, "_WARM", False)
    monkeypatch.setattr(torch, "empty", empty)
    base.warm_up_worker(torch.device("cuda"))  # does not raise
    assert base._WARM
