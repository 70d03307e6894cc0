"""FedAvg: the differentiable unroll of the client's local SGD (Dimitrov et al. 2022)."""

from __future__ import annotations

import copy

import pytest
import torch

from attacks.gradient_matching import dummy_gradient, dummy_update, local_steps, unrolled_delta
from attacks.gradinversion import GradInversion
from attacks.ig import InvertingGradients
from bench.client import compute_update, local_sgd, minibatches, training_loss
from bench.contracts import ClientSpec, Observation, Update
from bench.data import sample_batch
from bench.domains import PixelBox
from bench.grants import BN_STATS
from bench.registry import ARCHS, DATASETS
from bench.scoring import denormalize, score
from bench.suite import attack_cells
from bench.victim import victim_model
from helpers import make_suite


def scenario(arch: str, kw: dict, batch: int, client: ClientSpec, seed: int = 0,
             grant_bn: bool = False):
    ds = DATASETS.get("photos").cls(size=16)
    meta = ds.meta()
    x01, y = sample_batch(ds, batch, torch.Generator().manual_seed(seed))
    model = victim_model(ARCHS.get(arch).cls(**kw), ds, meta, "init", seed)
    update = compute_update(model, x01, y, client)
    obs = Observation(model=copy.deepcopy(model), update=Update(update.tensors, update.kind),
                      batch_size=batch, domain=PixelBox(meta.shape, meta.mean, meta.std),
                      num_classes=meta.num_classes, client=client,
                      grants={BN_STATS: update.bn_stats} if grant_bn else {},
                      generator=torch.Generator().manual_seed(7 + seed))
    return obs, x01, y, meta


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float(((p - q) ** 2).sum()) for p, q in zip(a, b))
    return (num / sum(float((q ** 2).sum()) for q in b)) ** 0.5


CLIENTS = [
    ClientSpec(mode="fedavg", local_epochs=3, lr=0.1),
    ClientSpec(mode="fedavg", local_epochs=2, local_batch_size=2, lr=0.05, bn_mode="eval"),
    ClientSpec(mode="fedavg", local_epochs=2, local_batch_size=3, lr=0.2),  # ragged last step
]


@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("arch,kw", [("lenet", {}), ("convnet", {"width": 4}),
                                     ("resnet", {"depth": 8, "width": 4})])
def test_unroll_reproduces_the_clients_delta_at_the_private_batch(arch, kw, client):
    obs, x01, y, _ = scenario(arch, kw, 4, client)
    delta = unrolled_delta(obs.model, x01, y, client)
    assert obs.update.kind == "delta"
    assert relative_error([d.detach() for d in delta], obs.update.tensors) < 1e-4
    other = unrolled_delta(obs.model, torch.rand_like(x01), y, client)
    assert relative_error([d.detach() for d in other], obs.update.tensors) > 1e-3


def test_unroll_is_differentiable_and_leaves_the_model_alone():
    client = CLIENTS[0]
    obs, x01, y, _ = scenario("convnet", {"width": 4}, 2, client)
    before = [p.detach().clone() for p in obs.model.parameters()]
    x = x01.clone().requires_grad_(True)
    delta = unrolled_delta(obs.model, x, y, client)
    (grad,) = torch.autograd.grad(sum((d ** 2).sum() for d in delta), x)
    assert float(grad.abs().sum()) > 0
    assert all(torch.equal(p, q) for p, q in zip(before, obs.model.parameters()))


def test_one_local_sgd_loop_with_a_step_gradient_hook():
    """The client's loop with its own gradient plugged in as a hook gives the same delta, bit
    for bit (DP-SGD plugs in its noisy gradient the same way); a hook cannot be unrolled."""
    client = CLIENTS[2]
    obs, x01, y, _ = scenario("lenet", {}, 4, client)
    steps: list[int] = []

    def plain(model, xb, tb):
        steps.append(len(xb))
        params = [p for p in model.parameters() if p.requires_grad]
        return torch.autograd.grad(training_loss(model(xb), tb), params)

    hooked = local_sgd(obs.model, x01, y, client, step_gradient=plain)
    default = local_sgd(obs.model, x01, y, client)
    assert hooked.loss is None and default.loss is not None
    assert all(torch.equal(a, b) for a, b in zip(hooked.delta, default.delta))
    assert steps == [3, 1, 3, 1] and len(minibatches(4, client)) == 4  # 2 epochs, ragged
    with pytest.raises(ValueError, match="unrolled"):
        local_sgd(obs.model, x01, y, client, unroll=True, step_gradient=plain)


def test_dummy_update_dispatches_on_the_update_kind():
    obs, x01, y, _ = scenario("lenet", {}, 1, ClientSpec())
    assert obs.update.kind == "gradient"
    direct = dummy_gradient(obs.model, x01, y, obs)
    assert all(torch.equal(a, b) for a, b in zip(dummy_update(obs.model, x01, y, obs), direct))
    assert local_steps(ClientSpec(), 8) == 1
    assert local_steps(ClientSpec(mode="fedavg", local_epochs=3), 8) == 3
    assert local_steps(ClientSpec(mode="fedavg", local_epochs=3, local_batch_size=3), 8) == 9


def test_ig_reconstructs_from_a_fedavg_delta():
    client = ClientSpec(mode="fedavg", local_epochs=3, lr=0.1, bn_mode="eval")
    obs, x01, y, meta = scenario("convnet", {"width": 4}, 1, client)
    rec = InvertingGradients(iterations=100).reconstruct(obs)
    assert rec.info["update_kind"] == "delta" and rec.info["local_steps"] == 3
    assert torch.equal(rec.labels, y)  # iDLG's rule read with the delta's sign
    p = score(x01, y, denormalize(rec.data, meta.mean, meta.std), rec.labels, 20)["psnr"]
    assert p > 15.0


def test_gradinversion_runs_on_fedavg_with_granted_statistics():
    client = ClientSpec(mode="fedavg", local_epochs=2, local_batch_size=1, lr=0.1)
    obs, *_ = scenario("convnet", {"width": 4}, 2, client, grant_bn=True)
    rec = GradInversion(iterations=3).reconstruct(obs)
    assert rec.iterations == 3 and torch.isfinite(rec.data).all()
    assert rec.info["local_steps"] == 4


def test_only_attacks_that_unroll_run_on_fedavg_cells():
    suite = make_suite(
        archs=[{"convnet": {"width": 4}}], grant=["bn_stats"],
        client={"mode": "fedavg", "local_epochs": 2},
        attacks=["dlg", "idlg", "ig", "gradinversion"])
    reasons = {c.attack.name: c.skip_reason for c in attack_cells(suite)}
    assert reasons["ig"] is None and reasons["gradinversion"] is None
    for name in ("dlg", "idlg"):
        assert reasons[name] == f"{name} inverts only gradient updates; a fedavg client shares " \
                                "a delta update"
