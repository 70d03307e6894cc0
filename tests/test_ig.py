"""Inverting Gradients, GradInversion, their shared loop and priors, and their victims."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from attacks.dlg import DLG
from attacks.gradient_matching import plan_budget, run_signed_adam, step_decay_lr
from attacks.gradinversion import GradInversion
from attacks.idlg import IDLG
from attacks.ig import InvertingGradients
from attacks.priors import BNStatsPrior, group_consistency, running_stats, total_variation
from bench.client import compute_update
from bench.contracts import CellContext, ClientSpec, Observation, Update
from bench.data import sample_batch
from bench.domains import PixelBox
from bench.grants import BN_STATS, LABELS
from bench.registry import ARCHS, ATTACKS, DATASETS
from bench.scoring import denormalize, score
from bench.suite import attack_cells
from bench.victim import victim_model
from helpers import make_suite, run_record


def scenario(arch: str = "convnet", arch_kw: dict | None = None, dataset: str = "photos",
             batch_size: int = 1, seed: int = 0, client: ClientSpec | None = None,
             grant_bn: bool = False, labels: torch.Tensor | None = None):
    """(observation, private images in [0,1], labels, meta), built as the pipeline does."""
    ds = DATASETS.get(dataset).cls(size=16)
    meta = ds.meta()
    x01, y = sample_batch(ds, batch_size, torch.Generator().manual_seed(seed))
    model = victim_model(ARCHS.get(arch).cls(**(arch_kw or {"width": 4})), ds, meta, "init",
                         seed)
    client = client or ClientSpec()
    update = compute_update(model, x01, y, client)
    grants = {BN_STATS: update.bn_stats} if grant_bn else {}
    if labels is not None:
        grants[LABELS] = labels
    obs = Observation(model=copy.deepcopy(model), update=Update(update.tensors, update.kind),
                      batch_size=batch_size, domain=PixelBox(meta.shape, meta.mean, meta.std),
                      num_classes=meta.num_classes, client=client, grants=grants,
                      generator=torch.Generator().manual_seed(100 + seed))
    return obs, x01, y, meta


def psnr(recon, x01, y, meta) -> float:
    return score(x01, y, denormalize(recon.data, meta.mean, meta.std), recon.labels, 20)["psnr"]


# -- priors and the loop --------------------------------------------------------------------


def test_total_variation_is_the_mean_absolute_neighbour_difference():
    assert float(total_variation(torch.ones(2, 3, 5, 5))) == 0.0
    stripes = torch.zeros(1, 1, 4, 4)
    stripes[..., 1::2] = 1.0  # vertical stripes: every horizontal pair differs by 1
    assert math.isclose(float(total_variation(stripes)), 1.0)
    assert math.isclose(float(total_variation(stripes.transpose(-1, -2))), 1.0)


def test_plan_budget_shares_the_caps_between_restarts():
    assert plan_budget(4, 100, None, None) == (4, 100)
    assert plan_budget(4, 100, 40, None) == (4, 10)
    assert plan_budget(2, 100, None, 21) == (2, 9)  # 2 × (9 steps + 1 scoring) ≤ 21
    assert plan_budget(8, 100, 3, None) == (3, 1)  # too few for 8 restarts: fewer restarts
    assert plan_budget(1, 100, None, 1) == (1, 0)  # one evaluation: score the init only


def test_step_decay_drops_at_three_five_and_seven_eighths():
    lrs = [step_decay_lr(0.1, i, 80, True) for i in range(80)]
    assert lrs[29] == pytest.approx(0.1) and lrs[30] == pytest.approx(0.01)
    assert lrs[49] == pytest.approx(0.01) and lrs[50] == pytest.approx(0.001)
    assert lrs[69] == pytest.approx(0.001) and lrs[70] == pytest.approx(1e-4)
    assert step_decay_lr(0.1, 79, 80, False) == 0.1


def test_signed_adam_stays_in_the_box_and_ranks_restarts_by_score():
    target = torch.full((1, 1, 3, 3), 2.0)  # outside the box [0, 1]: the optimum is its edge
    box = (torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    starts = [torch.full((1, 1, 3, 3), v) for v in (0.1, 0.5, 0.9)]
    res = run_signed_adam(starts, lambda x: ((x - target) ** 2).sum(), 30, lr=0.1, box=box,
                          score=lambda x: (x - 0.5).abs().sum())
    assert res.iterations == 90 and res.grad_evals == 93
    assert res.images.min() >= 0 and res.images.max() <= 1
    assert torch.allclose(res.images, torch.ones(1, 1, 3, 3))
    zero = run_signed_adam(starts, lambda x: x.sum(), 0, score=lambda x: (x - 0.5).abs().sum())
    assert zero.best_restart == 1 and zero.iterations == 0 and zero.grad_evals == 3


def test_signed_adam_drops_diverging_restarts():
    def objective(x):
        return x.sum() * (float("nan") if float(x.detach().mean()) > 0 else 1.0)

    starts = [torch.ones(1, 1, 2, 2), -torch.ones(1, 1, 2, 2)]
    res = run_signed_adam(starts, objective, 5)
    assert not res.diverged and res.best_restart == 1 and math.isinf(res.restart_losses[0])
    assert run_signed_adam(starts[:1], objective, 5).diverged


def test_group_consistency_pulls_towards_the_group_mean():
    xs = [torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)]
    assert float(group_consistency(xs[0], xs)) == pytest.approx(1.0)
    res = run_signed_adam(xs, lambda x: x.new_zeros(()) + 0 * x.sum(), 20, lr=0.1,
                          group=lambda x, all_: group_consistency(x, all_))
    assert abs(float(res.images.mean()) - 1.0) < 0.3  # both restarts moved to the middle


def test_a_diverged_restart_leaves_the_group_mean():
    """GradInversion's group term averages the live restarts only: a restart frozen on a
    non-finite loss keeps its stale image, which must not pull the others towards it."""
    def objective(x):  # flat for the restart at 0; NaN at once for the one at 5
        return x.sum() * (float("nan") if float(x.detach().mean()) > 2.5 else 0.0)

    xs = [torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 5.0)]
    res = run_signed_adam(xs, objective, 20, lr=0.1, lr_decay=False,
                          group=lambda x, all_: group_consistency(x, all_))
    assert res.best_restart == 0 and math.isinf(res.restart_losses[1])
    # the first step pulls towards the mean 2.5 (signed gradient −1), then restart 0 is
    # alone and its gradient is 0: Adam coasts on its momentum. Kept in the mean, it was
    # pulled all 20 steps, to about 2.0.
    alone = torch.zeros(1, 1, 2, 2, requires_grad=True)
    opt = torch.optim.Adam([alone], lr=0.1)
    for step in range(20):
        alone.grad = -torch.ones_like(alone) if step == 0 else torch.zeros_like(alone)
        opt.step()
    assert torch.equal(res.images, alone.detach())
    assert float(res.images.mean()) < 1.0


def test_bn_prior_vanishes_at_the_private_batch():
    obs, x01, _, _ = scenario(batch_size=4, grant_bn=True)
    prior = BNStatsPrior(obs.model, obs.grant(BN_STATS), "train", obs.device)
    assert float(prior(x01).detach()) < 1e-4
    assert float(prior(torch.rand(4, 3, 16, 16)).detach()) > 1e-2
    assert len(running_stats(obs.model)) == len(obs.grant(BN_STATS)) == 8


# -- Inverting Gradients -----------------------------------------------------------------------


def test_ig_reconstructs_a_photo_through_an_eval_mode_convnet():
    # Geiping et al.: cosine matching + TV recovers the image through a ReLU network.
    obs, x01, y, meta = scenario(client=ClientSpec(bn_mode="eval"))
    rec = InvertingGradients(iterations=150).reconstruct(obs)
    assert rec.iterations == 150 and rec.grad_evals == 151
    assert torch.equal(rec.labels, y) and rec.info["labels_inferred"]
    assert psnr(rec, x01, y, meta) > 17.0
    assert rec.loss_trace[-1] < rec.loss_trace[0]


def test_ig_is_deterministic_and_stays_in_the_pixel_box():
    obs, *_ = scenario(batch_size=2)
    a = InvertingGradients(iterations=5, restarts=2).reconstruct(obs)
    obs.generator.manual_seed(100)
    b = InvertingGradients(iterations=5, restarts=2).reconstruct(obs)
    assert torch.equal(a.data, b.data)
    lo, hi = obs.domain.bounds()
    assert bool((a.data >= lo).all() and (a.data <= hi).all())
    assert a.info["restarts_run"] == 2 and len(a.info["restart_losses"]) == 2
    assert a.info["final_loss"] == min(a.info["restart_losses"])


def test_ig_uses_granted_labels_instead_of_inferring(monkeypatch):
    import attacks.labels

    def no_inference(obs):
        raise AssertionError("labels were granted: nothing to infer")

    monkeypatch.setattr(attacks.labels, "infer_labels", no_inference)
    wrong = torch.tensor([5, 6])
    obs, *_ = scenario(batch_size=2, labels=wrong)
    rec = InvertingGradients(iterations=2).reconstruct(obs)
    # granted labels are the attack's target but not a recovery: none reported for scoring
    assert rec.labels is None and not rec.info["labels_inferred"]



@pytest.mark.parametrize("grant", [[], ["labels"]])
def test_suite_grants_labels_to_ig_as_an_optional_capability(grant):
    """ig *wants* labels: it gets them where the suite grants them, and is never skipped for
    their absence; dlg neither needs nor wants them, so the grant does not reach it."""
    suite = make_suite(grant=grant, batch_size=2, archs=[{"convnet": {"width": 4}}],
                       attacks=[{"ig": {"iterations": 2}}, {"dlg": {"steps": 1}}])
    cells = {c.attack.name: c for c in attack_cells(suite)}
    assert all(c.skip_reason is None for c in cells.values())
    assert cells["ig"].granted == frozenset(grant) and cells["dlg"].granted == frozenset()
    record = run_record(cells["ig"], 60.0)
    assert record["status"] in ("ok", "diverged"), record.get("error")
    assert record["attack_info"]["labels_inferred"] is (not grant)
    # label accuracy scores what the attack recovered: granted labels are not a recovery
    assert (record["metrics"]["label_acc"] is None) is bool(grant)


@pytest.mark.parametrize("attack", [InvertingGradients(iterations=50, restarts=3),
                                    GradInversion(iterations=50, restarts=3, group=0.1)])
def test_ig_and_gradinversion_honour_both_budget_caps(attack):
    obs, *_ = scenario(batch_size=2, grant_bn=True)
    obs.max_iterations = 12
    rec = attack.reconstruct(obs)
    assert rec.iterations == 12 and rec.grad_evals == 15  # 3 restarts × (4 steps + 1 score)
    obs.max_iterations, obs.max_grad_evals = None, 10
    rec = attack.reconstruct(obs)
    assert rec.grad_evals <= 10 and rec.iterations == 6  # 2 restarts fit: 2 × (3 + 1)


@pytest.mark.parametrize("cls", [DLG, IDLG])
def test_dlg_and_idlg_honour_both_budget_caps(cls):
    obs, *_ = scenario("lenet", {}, client=ClientSpec())
    obs.max_iterations = 2
    rec = cls(steps=50).reconstruct(obs)
    assert rec.iterations <= 2
    obs.max_iterations, obs.max_grad_evals = None, 27
    rec = cls(steps=50).reconstruct(obs)
    assert rec.grad_evals <= 27 and rec.iterations >= 2


# -- GradInversion ---------------------------------------------------------------------------


def context(arch: str, kw: dict, mode: str = "fedsgd") -> CellContext:
    return CellContext(arch, kw, "photos", (3, 16, 16), 8, 4, ClientSpec(mode=mode),
                       frozenset({BN_STATS}))


def test_gradinversion_declares_bn_statistics_and_needs_batchnorm():
    assert BN_STATS in GradInversion.wants and not GradInversion.needs
    assert not InvertingGradients.needs
    assert GradInversion().incompatibility(context("lenet", {})) is not None
    assert GradInversion().incompatibility(context("convnet", {"width": 4})) is None
    for cls in (InvertingGradients, GradInversion):
        assert cls.update_kinds == frozenset({"gradient", "delta"})
        assert cls().skip_reason(context("convnet", {"width": 4}, "fedavg")) is None


def test_gradinversion_statistics_follow_the_bn_mode():
    obs, *_ = scenario(batch_size=2)
    with pytest.raises(ValueError, match="bn_stats"):
        GradInversion(iterations=1).reconstruct(obs)  # train mode, nothing granted
    obs, x01, _, meta = scenario(batch_size=2, client=ClientSpec(bn_mode="eval"))
    with pytest.raises(ValueError, match="describe no data"):
        GradInversion().bn_targets(obs)  # an untrained model's running statistics: 0 and 1
    obs.model.train()
    with torch.no_grad():  # running statistics that came from data
        obs.model((x01 - torch.tensor(meta.mean).view(1, -1, 1, 1))
                  / torch.tensor(meta.std).view(1, -1, 1, 1))
    targets = GradInversion().bn_targets(obs)  # eval mode: the model's running statistics
    assert all(torch.equal(m, r) for (m, _), (r, _) in zip(targets, running_stats(obs.model)))
    rec = GradInversion(iterations=3).reconstruct(obs)
    assert rec.iterations == 3 and torch.isfinite(rec.data).all()


@pytest.mark.parametrize(("bn_mode", "victim", "source", "skipped"), [
    ("eval", "init", "auto", True),        # the prior would be BatchNorm's initial 0 and 1
    ("train", "init", "running", True),
    ("eval", "trained:5", "auto", False),  # running statistics that came from data
    ("train", "init", "auto", False),      # the client's granted batch statistics
])
def test_gradinversion_skips_a_prior_from_an_untrained_models_running_statistics(
        bn_mode, victim, source, skipped):
    suite = make_suite(archs=[{"convnet": {"width": 2}}], grant=[BN_STATS],
                       client={"bn_mode": bn_mode}, victim=victim,
                       attacks=[{"gradinversion": {"iterations": 1, "bn_source": source}}])
    (cell,) = attack_cells(suite)  # expansion only: no victim is trained
    if skipped:
        assert "untrained model (mean 0, variance 1)" in cell.skip_reason
        assert run_record(cell)["status"] == "skipped"
    else:
        assert cell.skip_reason is None


@pytest.mark.parametrize(("bn_mode", "victim", "skip"), [
    ("train", "init", "reads the client's batch statistics here"),
    ("eval", "trained:5", None),  # the running statistics: the server holds them
    ("eval", "init", "untrained model (mean 0, variance 1)"),
])
def test_gradinversion_needs_the_batch_statistics_only_where_its_prior_reads_them(
        bn_mode, victim, skip):
    """Huang et al.'s setting: a trained victim with BN in eval mode and no private batch
    statistics granted; the prior then reads the model's running statistics."""
    suite = make_suite(archs=[{"convnet": {"width": 2}}], client={"bn_mode": bn_mode},
                       victim=victim, attacks=[{"gradinversion": {"iterations": 1}}])
    (cell,) = attack_cells(suite)  # expansion only: no victim is trained
    assert BN_STATS not in cell.granted
    if skip is None:
        assert cell.skip_reason is None
        assert run_record(cell)["status"] == "ok"
    else:
        assert skip in cell.skip_reason


def test_components_are_registered_with_documentation():
    for name in ("ig", "gradinversion"):
        entry = ATTACKS.get(name)
        assert entry.description and entry.cls.paper
        assert {"iterations", "lr", "tv", "restarts"} <= {p.name for p in entry.params}
    gi_params = {p.name for p in ATTACKS.get("gradinversion").params}
    assert {"bn", "bn_source", "group", "l2"} <= gi_params
    for name in ("convnet", "resnet"):
        assert ARCHS.get(name).description and ARCHS.get(name).cls.paper


# -- the victims --------------------------------------------------------------------------------


def test_convnet_follows_geipings_layout():
    model = ARCHS.get("convnet").cls(width=2).build((3, 32, 32), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [2, 4, 4, 8, 8, 8, 8, 8]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 8
    assert model[-1].in_features == 36 * 2  # 32 → 10 → 3 after the two 3×3 pools
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    plain = ARCHS.get("convnet").cls(width=2, batchnorm=False).build((1, 16, 16), 10)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())


@pytest.mark.parametrize("depth,bns,linear_in", [(8, 1 + 6 + 2, 16), (20, 1 + 18 + 2, 16),
                                                 (18, 1 + 16 + 3, 32)])
def test_resnet_depths(depth, bns, linear_in):
    arch = ARCHS.get("resnet").cls(depth=depth, width=4)
    model = arch.build((3, 16, 16), 10)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bns
    assert model.fc.in_features == linear_in
    arch.init_weights(model, torch.Generator().manual_seed(0))
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)


def test_group_consistency_without_restarts_is_refused_at_load(tmp_path, capsys):
    """gradinversion's group term pulls each restart towards the restarts' mean: with one
    restart it was silently a no-op. The suite is refused in one line, exit 2."""
    import yaml

    from bench.cli import main
    from helpers import TINY_SUITE

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "grant": ["bn_stats"],
                                    "attacks": [{"gradinversion": {"group": 0.1}}]}))
    code = main(["run", str(path), "--dry-run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "restarts >= 2" in err[0], err
    path.write_text(yaml.safe_dump({**TINY_SUITE, "grant": ["bn_stats"], "attacks": [
        {"gradinversion": {"group": 0.1, "restarts": 2}}]}))
    assert main(["run", str(path), "--dry-run"]) == 0
