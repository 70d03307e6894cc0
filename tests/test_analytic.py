"""The analytic attack (attacks/analytic.py): x = ∇W[j]/∇b[j] of a biased first linear layer."""

from __future__ import annotations

import copy

import torch
from torch import nn

from attacks.analytic import Analytic
from bench.client import compute_update
from bench.contracts import CellContext, ClientSpec, Observation
from bench.domains import PixelBox
from bench.suite import attack_cells
from helpers import make_suite, run_record, scored_path

CPU = torch.device("cpu")


def _records(batch_size, activation, seeds=(0,)):
    suite = make_suite(datasets=[{"digits": {"size": 16}}],
                       archs=[{"mlp": {"activation": activation}}], attacks=["analytic"],
                       seeds=list(seeds), batch_size=batch_size)
    return [run_record(cell, 20.0) for cell in attack_cells(suite)]


def test_exact_at_batch_one():
    for rec in _records(1, "sigmoid", seeds=(0, 1)):
        assert rec["status"] == "ok", rec.get("error")
        assert rec["metrics"]["psnr"] >= 90.0  # exact up to float32 rounding
        assert rec["metrics"]["label_acc"] == 1.0
        assert rec["iterations"] == 1 and rec["grad_evals"] == 0


def test_exact_in_model_space_with_normalisation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 20), nn.Tanh(), nn.Linear(20, 5))
    x = torch.randn(1, 3, 4, 4)
    obs = Observation(model=copy.deepcopy(model),
                      update=compute_update(model, x, torch.tensor([3]), ClientSpec()),
                      batch_size=1, domain=PixelBox((3, 4, 4), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)),
                      num_classes=5, client=ClientSpec())
    rec = Analytic().reconstruct(obs)
    assert torch.allclose(rec.data, x, atol=1e-5)
    assert rec.labels.tolist() == [3]


def test_batch_of_four_returns_four_candidates():
    """ReLU units excited by a single sample give pure rows: most images come back exactly.
    Sigmoid units mix every sample: each candidate is an affine mixture of the batch."""
    for rec in _records(4, "relu", seeds=(0, 1)):
        psnr = rec["metrics"]["per_image"]["psnr"]
        assert len(psnr) == 4
        assert sum(p >= 60.0 for p in psnr) >= 3, psnr
    suite = make_suite(datasets=[{"digits": {"size": 16}}], batch_size=4,
                       archs=[{"mlp": {"activation": "sigmoid"}}], attacks=["analytic"])
    x01, recon01, _ = scored_path(attack_cells(suite)[0])
    basis = x01.flatten(1).double().T
    for img in recon01.double():
        # candidates are clamped to [0,1] by the pipeline; unclamped ones lie in the span
        a = img.flatten()
        coef = torch.linalg.lstsq(basis, a[:, None]).solution
        assert float((basis @ coef)[:, 0].sub(a).norm() / a.norm()) < 0.35


def test_candidates_lie_in_the_affine_hull_of_the_batch():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.Sigmoid(), nn.Linear(32, 10))
    x = torch.rand(3, 1, 8, 8)
    obs = Observation(model=copy.deepcopy(model),
                      update=compute_update(model, x, torch.tensor([1, 4, 7]), ClientSpec()),
                      batch_size=3, domain=PixelBox((1, 8, 8), (0.0,), (1.0,)), num_classes=10,
                      client=ClientSpec())
    rec = Analytic().reconstruct(obs)
    assert rec.data.shape == (3, 1, 8, 8)
    basis = torch.cat([x.flatten(1).double().T, torch.ones(1, 3, dtype=torch.float64)])
    for img in rec.data.double():
        target = torch.cat([img.flatten(), torch.ones(1, dtype=torch.float64)])
        coef = torch.linalg.lstsq(basis, target[:, None]).solution
        assert float((basis @ coef)[:, 0].sub(target).norm() / target.norm()) < 1e-4
    assert sorted(rec.labels.tolist()) == [1, 4, 7]


def test_incompatible_without_a_biased_first_linear_layer():
    def ctx(arch, params, mode="fedsgd"):
        return CellContext(arch, params, "digits", (1, 16, 16), 10, 1, ClientSpec(mode=mode),
                           frozenset())

    assert "Conv2d" in Analytic().incompatibility(ctx("lenet", {}))
    assert "no bias" in Analytic().incompatibility(ctx("fcn3", {}))
    assert "fedavg client shares a delta" in Analytic().skip_reason(ctx("mlp", {}, mode="fedavg"))
    assert Analytic().skip_reason(ctx("mlp", {})) is None
    (cell,) = attack_cells(make_suite(archs=["lenet"], attacks=["analytic"]))
    assert run_record(cell, 20.0)["status"] == "skipped"


def test_labels_of_a_batch_with_a_repeated_class_are_counted():
    """The B most negative bias-gradient entries are B distinct classes: a batch holding a
    class three times lost two of them. Geng et al.'s counts keep the repeats."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 10))
    y = torch.tensor([3, 3, 3, 7])
    update = compute_update(model, torch.rand(4, 3, 4, 4), y, ClientSpec())
    obs = Observation(model=copy.deepcopy(model), update=update, batch_size=4,
                      domain=PixelBox((3, 4, 4), (0.0,) * 3, (1.0,) * 3), num_classes=10,
                      client=ClientSpec())
    assert sorted(Analytic().reconstruct(obs).labels.tolist()) == [3, 3, 3, 7]
