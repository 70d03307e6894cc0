"""Batched trials: the vectorised engine matches the per-cell objective, trials stay
independent, grouped cells keep one record each, and a diverging trial spares its batch-mates.

Tolerances: the engine evaluates K trials with batched kernels (``vmap`` turns a per-trial
convolution into a grouped one), whose float32 rounding differs from a lone trial's by a few
ulps. Objectives are compared at rel 1e-4 (float32 eps is 1.2e-7: three orders of margin).
Trajectories are compared after a few optimiser steps only: gradient matching with ReLU/
sigmoid nets is chaotic over hundreds of steps, so any rounding difference eventually grows
to O(1) (the optimiser's own independence is exact: tests/test_batched_lbfgs.py).
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from attacks.clocks import RoundClock
from attacks.gradient_matching import cosine_distance, dummy_update, l2_distance
from attacks.labels import infer_labels
from attacks.trials import TrialEngine, TrialsIncompatible
from bench.cells import RunOptions
from bench.cells.trials import TrialsCell, group_trials, members
from bench.contracts import ClientSpec
from bench.leaderboard import write_leaderboard
from bench.pipeline import run_trials
from bench.runner import run_suite
from bench.store import load_records
from bench.suite import iter_cells
from helpers import CPU, make_suite, observe_tiny

LENET16 = {"datasets": [{"photos": {"size": 16}}], "archs": ["lenet"]}


def observations(suite):
    return [observe_tiny(c)[0] for c in iter_cells(suite)]


@pytest.mark.parametrize("case", [
    {"archs": ["lenet"]},
    {"archs": [{"convnet": {"width": 2}}], "batch_size": 2},
    {"archs": [{"convnet": {"width": 2}}], "batch_size": 2,
     "client": [{"bn_mode": "eval"}]},
    {"archs": ["mlp"], "batch_size": 4,
     "client": [{"mode": "fedavg", "local_epochs": 2, "local_batch_size": 2}]},
    {"archs": ["lenet"], "batch_size": 1, "defenses": [{"secagg": {"clients": 3}}]},
], ids=["lenet", "convnet-bn-train", "convnet-bn-eval", "fedavg-unrolled", "secagg"])
def test_engine_matches_the_lone_objective_of_every_trial(case):
    suite = make_suite(seeds=3, **{"datasets": [{"photos": {"size": 16}}], **case})
    obs = observations(suite)
    engine = TrialEngine(obs)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((len(obs), obs[0].batch_size, *obs[0].input_shape), generator=g)
    y = torch.randint(0, obs[0].num_classes, (len(obs), obs[0].batch_size), generator=g)
    for distance in (l2_distance, cosine_distance):
        batched = engine.losses(distance, x, y)
        lone = torch.stack([distance(dummy_update(o.model, x[k], y[k], o), o.update.tensors)
                            for k, o in enumerate(obs)])
        # 1 − cos near 0 keeps only cos's absolute rounding (float32: a few 1e-7; a trial at
        # 5e-5 differed by 1.2e-7 under ATEN_CPU_CAPABILITY=default)
        atol = 1e-6 if distance is cosine_distance else 1e-7
        assert torch.allclose(batched, lone, rtol=1e-4, atol=atol), (batched, lone)
        for rows in ([2], [0, 2], [1, 2]):  # the trials still running, once others stopped
            some = engine.losses(distance, x[rows], y[rows], rows=rows)
            assert torch.allclose(some, lone[rows], rtol=1e-4, atol=atol), (rows, some)


@pytest.mark.parametrize("arch", [{"convnet": {"width": 2}}, {"resnet": {"width": 4}}],
                         ids=["convnet", "resnet"])
def test_engine_gradients_through_batch_norm_in_train_mode_are_each_trials_own(arch):
    """torch's vmap rule for affine ``batch_norm`` in training mode gets the input gradient
    wrong (pytorch/functorch#534): the engine must not use it. In float64 the batched
    gradient of every trial's objective with respect to its dummies equals plain autograd on
    that trial alone through the client's own ``nn.BatchNorm2d`` (the bug: rel ~1e-3)."""
    suite = make_suite(seeds=3, batch_size=2, archs=[arch], datasets=[{"photos": {"size": 16}}])
    obs = [replace(o, model=o.model.double(),
                   update=replace(o.update, tensors=[t.double() for t in o.update.tensors]))
           for o in observations(suite)]
    engine = TrialEngine(obs)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((len(obs), 2, *obs[0].input_shape), generator=g, dtype=torch.float64)
    y = torch.randint(0, obs[0].num_classes, (len(obs), 2), generator=g)
    xb = x.clone().requires_grad_(True)
    batched = torch.autograd.grad(engine.losses(l2_distance, xb, y).sum(), xb)[0]
    for k, o in enumerate(obs):
        xk = x[k].clone().requires_grad_(True)
        lone = torch.autograd.grad(l2_distance(dummy_update(o.model, xk, y[k], o),
                                               o.update.tensors), xk)[0]
        error = float((batched[k] - lone).norm() / lone.norm())
        assert error < 1e-9, (k, error)


def test_engine_refuses_observations_that_cannot_share_a_pass():
    a = observations(make_suite(**LENET16))[0]
    b = observations(make_suite(datasets=[{"photos": {"size": 16}}],
                                archs=[{"lenet": {"width": 6}}]))[0]
    with pytest.raises(TrialsIncompatible):
        TrialEngine([a, b])


@pytest.mark.parametrize("attack", [{"ig": {"iterations": 12, "restarts": 2}},
                                    {"dlg": {"steps": 2, "max_eval_per_step": 5}},
                                    {"idlg": {"steps": 2, "max_eval_per_step": 5}},
                                    {"dlg": {"steps": 2, "max_eval_per_step": 5,
                                             "line_search": "strong_wolfe"}}])
def test_a_trial_alone_and_inside_a_batch_of_eight_reach_the_same_result(attack):
    suite = make_suite(seeds=8, attacks=[attack], **LENET16)
    cells = list(iter_cells(suite))
    attacker = cells[0].attack.build()
    together = attacker.reconstruct_trials(observations(suite))
    for k in (0, 5):
        alone = attacker.reconstruct(observe_tiny(cells[k])[0])
        assert alone.grad_evals == together[k].grad_evals
        assert torch.allclose(alone.data, together[k].data, atol=1e-3), \
            (alone.data - together[k].data).abs().max()
        assert math.isclose(alone.info["final_loss"], together[k].info["final_loss"],
                            rel_tol=1e-3, abs_tol=1e-6)


def test_cells_differing_only_by_seed_are_grouped_and_others_stay_alone():
    suite = make_suite(seeds=5, attacks=["ig", "gradinversion", {"dlg": {"steps": 1}}],
                       archs=[{"convnet": {"width": 2}}], grant=["bn_stats"],
                       datasets=[{"photos": {"size": 16}}])
    cells = [c for c in iter_cells(suite) if not c.skip_reason]
    tasks = group_trials(cells, size=3)
    groups = [t for t in tasks if isinstance(t, TrialsCell)]
    # ig and dlg: 5 seeds in groups of 3 and 2; gradinversion (not batched): 5 alone
    assert sorted(len(t.cells) for t in groups) == [2, 2, 3, 3]
    assert sum(len(members(t)) for t in tasks) == len(cells)
    assert sorted(c.cell_id for t in tasks for c in members(t)) == \
        sorted(c.cell_id for c in cells)
    for t in groups:
        assert len({c.attack.label for c in t.cells}) == 1
        assert len({c.seed for c in t.cells}) == len(t.cells)
    assert group_trials(cells, size=1) == cells


def test_a_plugin_declaring_batched_trials_as_a_flag_still_groups_its_image_cells(
        monkeypatch):
    # the attribute was a flag before it named modalities (a bool, or whatever a plugin
    # wrote: None, 0, 1): true meant the vectorised engine, which batches images; a plugin
    # may also name one modality as a string
    from attacks.ig import InvertingGradients

    suite = make_suite(seeds=2, attacks=[{"ig": {"iterations": 1}}], **LENET16)
    cells = list(iter_cells(suite))
    for flag, groups in ((True, 1), (False, 0), (1, 1), (0, 0), (None, 0), (("image",), 1),
                         ("image", 1), ("text", 0)):  # a string: the one modality it names
        monkeypatch.setattr(InvertingGradients, "batched_trials", flag)
        tasks = group_trials(cells, size=8)
        assert sum(isinstance(t, TrialsCell) for t in tasks) == groups


def test_groups_are_cut_into_passes_of_k_whatever_the_workers():
    """A group is cut into consecutive passes of K; the workers play no part (the passes were
    cut until every worker had one, so --jobs changed which cells shared a pass, and with it
    a cell's float32 rounding and, through a chaotic optimiser, its metrics)."""
    suite = make_suite(seeds=5, defenses=["none", {"prune": {"ratio": 0.3}}],
                       attacks=[{"dlg": {"steps": 1}}])
    cells = list(iter_cells(suite))
    for size, sizes in ((16, [10]), (8, [8, 2]), (4, [4, 4, 2]), (3, [3, 3, 3, 1]),
                        (1, [1] * 10)):
        tasks = group_trials(cells, size)
        assert [len(members(t)) for t in tasks] == sizes
        assert [c for t in tasks for c in members(t)] == cells
    gi = list(iter_cells(make_suite(seeds=5, attacks=[{"dlg": {"steps": 1}},
                                                      {"gradinversion": {"iterations": 1}}])))
    assert sorted(len(members(t)) for t in group_trials(gi, 16)) == [1] * 5 + [5]


def test_the_committed_results_passes_are_the_grouping_s():
    """Re-running a committed suite with the --trials it ran under gives its records' passes,
    so its cells can come back bit for bit on the machine that ran them."""
    import json

    from bench.suite import load_suite
    from helpers import ROOT

    checked = 0
    for folder in sorted((ROOT / "results").glob("*/records")):
        passes = set()
        for path in folder.glob("*.json"):
            batch = json.loads(path.read_text()).get("trial_batch") or {}
            if len(batch.get("cells") or []) > 1:
                passes.add(frozenset(batch["cells"]))
        if not passes:
            continue
        cells = list(iter_cells(load_suite(folder.parent.name)))
        grouped = [{frozenset(c.cell_id for c in members(t)) for t in group_trials(cells, k)}
                   for k in (8, 16)]  # the command line's default, run_suite's
        assert any(passes <= g for g in grouped), folder.parent.name
        checked += 1
    assert checked >= 5


def test_a_cells_metrics_do_not_depend_on_the_number_of_workers(tmp_path):
    """Six DLG seeds ran as one pass under --jobs 1 and as two passes of three under --jobs 2:
    up to 7 dB apart per cell on the same machine and thread count."""
    suite = make_suite(seeds=6, attacks=[{"dlg": {"steps": 8}}], archs=["lenet"],
                       datasets=[{"digits": {"size": 8}}])
    metrics = []
    for jobs in (1, 2):
        run_suite(suite, tmp_path / str(jobs), jobs=jobs, threads=1, device="cpu",
                  progress=False, trials=8)
        records = sorted(load_records(tmp_path / str(jobs)), key=lambda r: r["cell_id"])
        assert all(r["trial_batch"]["trials"] == 6 for r in records)
        metrics.append([r["metrics"]["psnr"] for r in records])
    assert metrics[0] == metrics[1]


def test_text_cells_are_never_grouped_where_the_attack_batches_only_images():
    # dlg vectorises its image trials; on text it optimises each cell in turn, so a group
    # would only stretch one task's timeout over K cells and share out their time equally
    suite = make_suite(seeds=3, attacks=[{"dlg": {"steps": 1}}],
                       archs=[{"transformer": {"width": 32}}, "lenet"],
                       datasets=[{"pydoc": {"task": "classify", "seq_len": 8}},
                                 {"photos": {"size": 16}}])
    cells = [c for c in iter_cells(suite) if not c.skip_reason]
    tasks = group_trials(cells, size=8)
    grouped = [c for t in tasks if isinstance(t, TrialsCell) for c in t.cells]
    assert grouped and {c.dataset.name for c in grouped} == {"photos"}
    alone = [t for t in tasks if not isinstance(t, TrialsCell)]
    assert len(alone) == 3 and {c.dataset.name for c in alone} == {"pydoc"}


def test_grouped_cells_give_one_record_each_and_resume_reruns_only_the_missing(tmp_path):
    suite = make_suite(seeds=4, attacks=[{"ig": {"iterations": 3}}], **LENET16)
    ids = {c.cell_id for c in iter_cells(suite)}
    summary = run_suite(suite, tmp_path, jobs=1, device="cpu", progress=False, trials=4)
    assert summary.counts["ok"] == 4
    import json

    records = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")}
    assert set(records) == ids
    for r in records.values():
        batch = r["trial_batch"]
        assert set(batch["cells"]) == ids and batch["trials"] == 4
        assert batch["time_share"] == "trial clock"  # all four ran every iteration: equal
        assert r["timing"]["attack_seconds"] == pytest.approx(batch["pass_seconds"] / 4)
        assert batch["peak_memory"] == "pass"  # peak_memory_bytes is the pass's, said so
        assert r["curve"][-1]["grad_evals"] == r["grad_evals"]
    # a run killed before two cells were written: resume runs exactly those two
    lost = sorted(ids)[:2]
    for cid in lost:
        (tmp_path / "records" / f"{cid}.json").unlink()
    again = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False, trials=4)
    assert again.already_done == 2 and again.counts["ok"] == 2
    assert {r["cell_id"] for r in load_records(tmp_path)} == ids
    rerun = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")}
    assert set(rerun[lost[0]]["trial_batch"]["cells"]) == set(lost)
    kept = sorted(ids - set(lost))[0]
    assert rerun[kept] == records[kept]
    # the leaderboard shows the quality-versus-compute curve of the snapshots
    text = write_leaderboard(tmp_path).read_text()
    assert "## Quality versus compute" in text
    picture = text.split("](plots/quality_curve_")[1].split(")")[0]
    assert (tmp_path / "plots" / f"quality_curve_{picture}").stat().st_size > 0


def poison_seed(monkeypatch, seed: int) -> None:
    """The pipeline observes seed ``seed``'s update as NaN (its trial diverges)."""
    import bench.pipeline as pipeline

    observe = pipeline.observe

    def poisoned(cell, device):
        observed = observe(cell, device)
        if cell.seed == seed:
            observed.obs.update.tensors[0].fill_(float("nan"))
        return observed

    monkeypatch.setattr(pipeline, "observe", poisoned)


def test_a_nan_trial_becomes_a_diverged_record_while_its_batch_mates_finish(monkeypatch):
    suite = make_suite(seeds=4, attacks=[{"ig": {"iterations": 5}}], **LENET16)
    cells = list(iter_cells(suite))
    poison_seed(monkeypatch, 2)
    outcomes = run_trials(cells, CPU, RunOptions())
    statuses = {o.record.seed: o.record.status for o in outcomes}
    assert statuses == {0: "ok", 1: "ok", 2: "diverged", 3: "ok"}
    assert all(o.record.trial_batch["trials"] == 4 for o in outcomes)
    # the pass is divided by the trials' clocks: the diverged trial left after its first
    # iteration and pays for that one only, its batch-mates for it and the rest
    seconds = {o.record.seed: o.record.timing["attack_seconds"] for o in outcomes}
    assert seconds[2] < min(seconds[s] for s in (0, 1, 3))
    assert sum(seconds.values()) == pytest.approx(outcomes[0].record.trial_batch["pass_seconds"])


def test_a_cell_whose_observation_fails_is_an_error_record_and_the_rest_run(monkeypatch):
    import bench.pipeline as pipeline

    suite = make_suite(seeds=3, attacks=[{"dlg": {"steps": 1}}], **LENET16)
    observe = pipeline.observe

    def broken(cell, device):
        if cell.seed == 1:
            raise RuntimeError("no data")
        return observe(cell, device)

    monkeypatch.setattr(pipeline, "observe", broken)
    outcomes = run_trials(list(iter_cells(suite)), CPU, RunOptions())
    assert [o.record.status for o in outcomes] == ["ok", "error", "ok"]
    assert "setup: RuntimeError: no data" in outcomes[1].record.error
    assert outcomes[0].record.trial_batch["trials"] == 2


def test_defenses_share_a_pass_unless_they_change_the_observed_batch():
    suite = make_suite(seeds=2, defenses=["none", {"noise": {"scale": 0.01}},
                                          {"secagg": {"clients": 2}}], **LENET16)
    tasks = group_trials(list(iter_cells(suite)), size=16)
    sizes = sorted(len(members(t)) for t in tasks)
    assert sizes == [2, 4]  # none + noise (2 seeds each) together; the aggregate's apart
    outcomes = run_trials(list(tasks[0].cells if len(members(tasks[0])) == 4
                               else tasks[1].cells), CPU, RunOptions())
    assert all(o.record.status == "ok" for o in outcomes)
    assert {o.record.defense_label for o in outcomes} == {"none", "noise(scale=0.01)"}


def test_client_spec_differences_keep_cells_apart():
    suite = make_suite(seeds=2, client=[{"lr": 0.1}, {"lr": 0.2}], **LENET16)
    tasks = group_trials(list(iter_cells(suite)), size=8)
    assert len(tasks) == 2
    assert {dict(t.cells[0].client)["lr"] for t in tasks} == {ClientSpec(lr=0.1).lr, 0.2}


@pytest.mark.parametrize("attack", [{"ig": {"iterations": 4, "restarts": 2}},
                                    {"dlg": {"steps": 2, "restarts": 2}}])
def test_a_diverged_cell_with_restarts_is_written_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                      attack):
    suite = make_suite(seeds=3, attacks=[attack], **LENET16)
    poison_seed(monkeypatch, 1)
    summary = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert summary.counts == {"ok": 2, "diverged": 1}
    assert {r["status"] for r in load_records(tmp_path)} == {"ok", "diverged"}


@pytest.mark.parametrize("line_search", ["none", "strong_wolfe"])
@pytest.mark.parametrize("name", ["dlg", "idlg"])
def test_restarts_share_the_suites_budget(name, line_search):
    suite = make_suite(seeds=1, attacks=[{name: {"steps": 10, "restarts": 3,
                                                 "line_search": line_search}}],
                       budget={"max_grad_evals": 30, "max_iterations": 4}, **LENET16)
    recon = observe_and_attack(suite)
    assert recon.grad_evals <= 30 and recon.iterations <= 4


@pytest.mark.parametrize("steps", [1, 3])
def test_idlg_restarts_are_ranked_by_the_loss_of_the_points_they_return(steps):
    # with fixed steps a step's last move is not evaluated (as in torch and DLG's loop), so
    # the loss last evaluated is not the returned image's: the ranking must score the
    # points it returns, or it may keep a restart whose last move went uphill
    suite = make_suite(seeds=1, attacks=[{"idlg": {"steps": steps, "max_eval_per_step": 4,
                                                    "restarts": 3}}],
                       budget={"max_grad_evals": 40}, **LENET16)
    cell = list(iter_cells(suite))[0]
    obs = observe_tiny(cell)[0]
    recon = cell.attack.build().reconstruct(obs)
    labels = infer_labels(obs)
    losses = recon.info["restart_losses"]
    returned = l2_distance(dummy_update(obs.model, recon.data, labels, obs),
                           obs.update.tensors).item()
    assert returned == pytest.approx(losses[recon.info["best_restart"]], rel=1e-4)
    assert recon.info["best_restart"] == losses.index(min(losses))
    assert recon.grad_evals <= 40  # the scoring evaluations come out of the budget


def observe_and_attack(suite):
    cell = list(iter_cells(suite))[0]
    return cell.attack.build().reconstruct(observe_tiny(cell)[0])


def test_secure_aggregates_with_different_settings_do_not_share_a_pass():
    suite = make_suite(seeds=2, defenses=[{"secagg": {"clients": 2}},
                                          {"secagg": {"clients": 2, "reduce": "sum"}}],
                       **LENET16)
    tasks = group_trials(list(iter_cells(suite)), size=16)
    assert sorted(len(members(t)) for t in tasks) == [2, 2]


def test_a_restart_removes_the_temporaries_of_a_killed_write(tmp_path):
    stale = tmp_path / "records" / ".abc.json.x1.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("{")
    run_suite(make_suite(**LENET16), tmp_path, jobs=0, device="cpu", progress=False)
    assert not stale.exists()


def test_plateau_stops_once_the_running_best_gains_too_little():
    from attacks.stopping import Plateau

    rule = Plateau(patience=2, min_rel_improvement=0.1)
    assert not rule.stalled([10.0, 5.0])  # not yet patience + 1 steps
    assert not rule.stalled([10.0, 5.0, 4.0])  # 10 → 4 over two steps: progress
    assert rule.stalled([10.0, 5.0, 4.8, 4.6])  # 5 → 4.6: under 10% of 5
    assert not Plateau(patience=0).stalled([1.0] * 10)


def test_ig_with_patience_records_where_each_trial_stopped():
    suite = make_suite(seeds=2, attacks=[{"ig": {"iterations": 200, "patience": 3,
                                                 "min_rel_improvement": 0.5}}], **LENET16)
    recons = list(iter_cells(suite))[0].attack.build().reconstruct_trials(observations(suite))
    for recon in recons:
        stop = recon.info["converged_at"]
        assert stop is not None and stop["iterations"] < 200 == recon.info["iterations_per_restart"]
        assert recon.grad_evals == stop["grad_evals"] + 1  # plus the final scoring


def test_ig_evaluates_only_the_trials_still_running(monkeypatch):
    suite = make_suite(seeds=3, attacks=[{"ig": {"iterations": 200, "patience": 5,
                                                 "min_rel_improvement": 0.05}}], **LENET16)
    calls: list[list[int]] = []
    losses = TrialEngine.losses

    def spy(self, *args, rows=None, **kw):
        if rows is not None:
            calls.append(list(rows))
        return losses(self, *args, rows=rows, **kw)

    monkeypatch.setattr(TrialEngine, "losses", spy)
    recons = list(iter_cells(suite))[0].attack.build().reconstruct_trials(observations(suite))
    stops = [r.info["converged_at"]["iterations"] for r in recons]
    assert len(set(stops)) > 1 and max(stops) < 200
    # iteration i evaluates the trials that had not stopped before it, once one has
    running = [[j for j, s in enumerate(stops) if s >= i] for i in range(1, max(stops) + 1)]
    assert calls == [rows for rows in running if len(rows) < 3]


def test_each_adam_trial_pays_for_the_iterations_it_took_part_in(monkeypatch):
    from types import SimpleNamespace

    import attacks.batched_adam as batched_adam
    from attacks.batched_adam import run_signed_adam_trials
    from attacks.stopping import Plateau

    ticks = iter(range(10**9))  # one tick per iteration: the clocks are exact fractions
    monkeypatch.setattr(batched_adam, "time",
                        SimpleNamespace(perf_counter=lambda: float(next(ticks))))

    def losses(x):  # trial 0 descends, trial 1 turns NaN, trial 2 is flat (plateaus)
        flat = (x[2] * 0).sum() + 1.0
        return torch.stack([((x[0] - 1) ** 2).sum(), x[1].sum() * math.nan, flat])

    res = run_signed_adam_trials(torch.zeros(3, 4), losses, 10, plateau=Plateau(3, 1e-3),
                                 snapshot_at=[2, 5])
    t0, t1, t2 = res.trials
    assert (t0.iterations, t1.iterations, t2.iterations) == (10, 1, 4)
    assert t1.diverged and t2.converged_at is not None
    assert t1.seconds == pytest.approx(1 / 3)
    assert t2.seconds == pytest.approx(1 / 3 + 3 / 2) == t2.converged_at["seconds"]
    assert t0.seconds == pytest.approx(1 / 3 + 3 / 2 + 6)
    assert [s for _, s, _ in t0.snapshots] == pytest.approx([1 / 3 + 1 / 2, 1 / 3 + 3 / 2 + 1])
    # a cell of these three restarts had spent e ticks by round e, whoever was still running
    assert res.round_shares == pytest.approx([1 / 3] + [1 / 2] * 3 + [1] * 6)
    clock = RoundClock(res.round_shares)
    assert [clock.at(e, [10, 1, 4]) for e in range(11)] == pytest.approx(list(range(11)))
    assert clock.at(4, [4]) == pytest.approx(t2.seconds) and clock.at(2, [1]) == t1.seconds


@pytest.mark.parametrize("attack", [
    {"ig": {"iterations": 200, "restarts": 4, "patience": 5, "min_rel_improvement": 0.05}},
    {"dlg": {"steps": 60, "restarts": 4, "patience": 5, "min_rel_improvement": 0.01}},
], ids=["ig", "dlg"])
def test_a_lone_cells_restarts_are_timed_by_what_they_spent(attack):
    # restarts that stop at different times: the winner's curve and stop are timed by the
    # seconds all four restarts had spent by then, so never past the cell's own time
    suite = make_suite(attacks=[attack], **LENET16)
    (outcome,) = run_trials(list(iter_cells(suite)), CPU, RunOptions())
    record = outcome.record
    spent = record.timing["attack_seconds"]
    assert record.attack_info["restarts_run"] == 4 and record.converged_at is not None
    assert record.converged_at["seconds"] <= spent
    seconds = [p["seconds"] for p in record.curve]
    assert seconds == sorted(seconds) and seconds[-1] == spent


def test_stopped_adam_trials_leave_the_evaluations_and_the_others_run_on_unchanged():
    from attacks.batched_adam import run_signed_adam_trials
    from attacks.stopping import Plateau

    centre = torch.linspace(-1, 1, 5, dtype=torch.float64)[:, None] * torch.ones(5, 6,
                                                                                 dtype=torch.float64)
    scale = torch.tensor([1.0, 1e-9, 2.0, 1e-9, 0.5], dtype=torch.float64)  # 1, 3: flat;
    # 2 starts at its minimum; 4 moves towards 1 and turns NaN past 0.9
    evaluated: list[list[int]] = []

    def losses(x):  # each row its own: a scaled quadratic, NaN once a row passes 0.9
        out = scale * ((x - centre) ** 2).sum(dim=1) + 1.0
        return out.masked_fill(x[:, 0] > 0.9, math.nan)

    def rows_losses(x, rows):
        evaluated.append(list(rows))
        out = scale[rows] * ((x - centre[rows]) ** 2).sum(dim=1) + 1.0
        return out.masked_fill(x[:, 0] > 0.9, math.nan)

    runs = [run_signed_adam_trials(torch.zeros(5, 6, dtype=torch.float64), losses, 60,
                                   lr=0.05, plateau=Plateau(4, 1e-6), snapshot_at=[10, 40],
                                   rows_losses=extra) for extra in (None, rows_losses)]
    everyone, shrinking = runs
    assert len({t.iterations for t in everyone.trials}) > 1  # trials stop at different times
    assert evaluated and min(map(len, evaluated)) < 5
    assert torch.equal(everyone.images, shrinking.images)
    for a, b in zip(everyone.trials, shrinking.trials):
        assert (a.iterations, a.grad_evals, a.diverged, a.final_loss, a.loss_trace, a.bests) \
            == (b.iterations, b.grad_evals, b.diverged, b.final_loss, b.loss_trace, b.bests)
        assert (a.converged_at is None) == (b.converged_at is None)
        assert [(e, x.tolist()) for e, _, x in a.snapshots] \
            == [(e, x.tolist()) for e, _, x in b.snapshots]


def test_run_suite_refuses_fewer_than_one_trial_per_pass_before_it_starts(tmp_path):
    from bench.registry import LeakbenchError

    with pytest.raises(LeakbenchError, match="trials per pass must be at least 1, got 0"):
        run_suite(make_suite(), tmp_path / "out", jobs=0, device="cpu", progress=False,
                  trials=0)
    assert not (tmp_path / "out").exists()
