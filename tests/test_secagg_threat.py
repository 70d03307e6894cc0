"""Secure aggregation as the server sees it (Bonawitz et al. 2017): the observation carries the
client count K and the K·B aggregated samples, attacks reconstruct (or are skipped on) a K·B
batch, label inference reads the aggregate, and scoring matches against every aggregated
image while counting the private client's own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attacks.gradient_matching import dummy_update
from attacks.labels import count_labels, infer_labels
from bench.cells import RunOptions
from bench.client import compute_update
from bench.contracts import ClientSpec, DefenseContext, Observation, Reconstruction, shared_update
from bench.data import normalize
from bench.domains import PixelBox
from bench.pipeline import observe, score_attack
from bench.registry import DEFENSES
from bench.suite import attack_cells
from helpers import CPU, make_suite, run_record

CLASSES = 5
SHAPE = (3, 6, 6)


def secagg_cells(clients: int, batch_size: int = 1, attack: object = None) -> list:
    suite = make_suite(batch_size=batch_size, defenses=[{"secagg": {"clients": clients}}],
                       attacks=[attack or {"dlg": {"steps": 2}}])
    return attack_cells(suite)


@pytest.mark.parametrize(("clients", "batch"), [(4, 1), (3, 2)])
def test_the_observation_carries_k_and_the_aggregated_batch(clients, batch):
    (cell,) = secagg_cells(clients, batch)
    observed = observe(cell, CPU)
    obs = observed.obs
    assert obs.clients == clients and obs.batch_size == clients * batch
    assert obs.client_batch_size == batch
    assert obs.update.info["secagg_clients"] == clients  # public with the protocol
    assert observed.x01.shape[0] == clients * batch == len(observed.private.y)
    assert observed.own == slice(0, batch)
    # the private client's images come first, the other clients' after them, all distinct
    plain = observe(attack_cells(make_suite(batch_size=batch))[0], CPU)
    assert torch.equal(observed.x01[observed.own], plain.x01)
    flat = observed.x01.flatten(1)
    assert torch.cdist(flat, flat).add(torch.eye(len(flat))).min() > 0
    # the compatibility check sees the same batch as the attack
    ctx = cell.context()
    seen = ctx.observed_through([d.build() for d in cell.defense])
    assert (ctx.batch_size, ctx.clients) == (batch, 1)
    assert (seen.batch_size, seen.clients) == (clients * batch, clients)


def test_a_four_client_cell_at_batch_one_is_scored_against_the_four_images():
    (cell,) = secagg_cells(4)
    record = run_record(cell)
    assert record["status"] == "ok"
    metrics = record["metrics"]
    assert len(metrics["per_image"]["psnr"]) == 4 and len(metrics["matching"]) == 4
    assert metrics["own_images"] == 1
    own = metrics["per_image"]["psnr"][0]
    assert metrics["own_psnr"] == pytest.approx(own)
    assert metrics["own_recovered"] == int(own >= 20)
    assert record["aggregate"] == {"clients": 4, "observed_batch": 4, "own_images": [0, 1]}


def test_own_recovered_counts_only_the_private_clients_images():
    (cell,) = secagg_cells(4)
    observed = observe(cell, CPU)
    exact = observed.private.x.clone()  # every aggregated image, in model-input space
    metrics, _ = score_attack(observed, Reconstruction(exact), RunOptions())
    assert metrics["own_recovered"] == 1 and metrics["own_psnr"] == pytest.approx(100.0)
    others_only = exact.clone()
    others_only[0] = normalize(torch.full((1, *exact.shape[1:]), 0.5),
                               observed.meta.mean, observed.meta.std)[0]
    metrics, _ = score_attack(observed, Reconstruction(others_only), RunOptions())
    assert metrics["own_recovered"] == 0 and metrics["own_psnr"] < 20
    assert sum(v >= 99 for v in metrics["per_image"]["psnr"]) == 3  # the others, still exact


def test_idlg_is_skipped_with_the_reason_on_an_aggregate():
    (cell,) = secagg_cells(4, attack={"idlg": {"steps": 2}})
    assert "aggregate of 4 clients, 4 samples" in cell.skip_reason
    record = run_record(cell)
    assert record["status"] == "skipped" and "one sample" in record["error"]
    (alone,) = secagg_cells(1, attack={"idlg": {"steps": 2}})  # K = 1 is the identity
    assert alone.skip_reason is None


# --- what attacks read off an aggregate ------------------------------------------------------


def head_model(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    """A small MLP; its output layer's weight is zero, so the predicted probabilities do not
    depend on the input and the count rule's p̄ is exact (Geng et al. 2021)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(3, 4, 3), nn.ReLU()]
    if batchnorm:
        layers.insert(1, nn.BatchNorm2d(4))
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * 4 * 4, 12), nn.ReLU(),
                          nn.Linear(12, CLASSES))
    with torch.no_grad():
        model[-1].weight.zero_()
    return model


def aggregate(model: nn.Module, clients: int, batch: int, reduce: str,
              client: ClientSpec | None = None
              ) -> tuple[Observation, torch.Tensor, torch.Tensor]:
    """The server's observation of a K-client aggregate, and all K·B images and labels."""
    client = client or ClientSpec()
    g = torch.Generator().manual_seed(11)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.rand(n, *SHAPE, generator=g), torch.randint(0, CLASSES, (n,), generator=g)

    x, y = sample(batch)
    ctx = DefenseContext(model, x, y, client, torch.Generator().manual_seed(3), CLASSES, sample)
    secagg = DEFENSES.get("secagg").cls(clients=clients, reduce=reduce)
    update = secagg.transform_update(compute_update(model, x, y, client), ctx)
    obs = Observation(model=model, update=shared_update(update), batch_size=clients * batch,
                      domain=PixelBox(SHAPE, (0.0,) * 3, (1.0,) * 3), num_classes=CLASSES,
                      client=client, clients=clients)
    x_all = torch.cat([x, *(ox for ox, _ in ctx.aggregated)])
    y_all = torch.cat([y, *(oy for _, oy in ctx.aggregated)])
    return obs, x_all, y_all


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize(("clients", "batch"), [(4, 1), (3, 2)])
def test_count_labels_read_the_k_times_b_labels_of_an_aggregate(reduce, clients, batch):
    obs, _, y_all = aggregate(head_model(), clients, batch, reduce)
    expected = sorted(y_all.tolist())
    assert sorted(count_labels(obs).tolist()) == expected
    assert sorted(infer_labels(obs).tolist()) == expected  # never iDLG's one label


@pytest.mark.parametrize("reduce", ["mean", "sum"])
@pytest.mark.parametrize("client", [ClientSpec(), ClientSpec(mode="fedavg", local_epochs=2,
                                                             local_batch_size=1, lr=0.05)])
def test_the_dummy_update_of_the_true_batch_is_the_aggregate(reduce, client):
    """Attacks simulate each client on its own B samples (BatchNorm in train mode normalises
    each client's batch; FedAvg unrolls each client's steps) and combine them as the server
    sees them: at the true K·B batch they reproduce the observed aggregate."""
    model = head_model(batchnorm=True)
    with torch.no_grad():
        model[-1].weight.normal_()
    obs, x_all, y_all = aggregate(model, 3, 2, reduce, client)
    dummy = dummy_update(model, x_all, y_all, obs)
    for d, o in zip(dummy, obs.update.tensors):
        assert torch.allclose(d, o, atol=1e-6)
    whole = ClientSpec(mode=client.mode, local_epochs=client.local_epochs, lr=client.lr)
    one_client = compute_update(model, x_all, y_all, whole).tensors  # one batch of K·B
    assert not all(torch.allclose(a, o, atol=1e-6) for a, o in zip(one_client,
                                                                   obs.update.tensors))


def test_a_chain_with_two_aggregations_is_refused_at_load():
    from bench.suite import SuiteError

    with pytest.raises(SuiteError, match="at most one protocol-level link"):
        make_suite(defenses=[{"chain": [{"secagg": {"clients": 2}}, {"secagg": {"clients": 3}}]}])


def test_a_link_reading_the_batch_after_the_aggregate_is_refused_at_load():
    """[secagg, soteria]: Soteria's mask comes from one client's images but would prune the
    K clients' aggregate, which no party could do; [soteria, secagg] is each client's own."""
    from bench.suite import SuiteError

    with pytest.raises(SuiteError, match="soteria reads the client's batch.*put soteria "
                                         "before secagg"):
        make_suite(defenses=[{"chain": [{"secagg": {"clients": 2}}, "soteria"]}])
    make_suite(defenses=[{"chain": ["soteria", {"secagg": {"clients": 2}}]}])
    make_suite(defenses=[{"chain": [{"secagg": {"clients": 2}}, "noise"]}])


@pytest.mark.parametrize("later", ["prune", "topk", "clip", {"quantize": {"mode": "int8"}}])
def test_an_update_link_no_protocol_runs_on_the_aggregate_is_refused_after_it(later):
    """[secagg, prune] had run: the server observed a pruned aggregate, but the server is the
    attacker and holds the aggregate before any such link. Noise stays: distributed DP
    adds it inside the protocol from the clients' shares."""
    from bench.suite import SuiteError

    name = later if isinstance(later, str) else next(iter(later))
    with pytest.raises(SuiteError, match=f"{name} after secagg would act on the aggregate, "
                                         "which only the server"):
        make_suite(defenses=[{"chain": [{"secagg": {"clients": 2}}, later]}])
    make_suite(defenses=[{"chain": [later, {"secagg": {"clients": 2}}]}])  # each client's own
    make_suite(defenses=[{"chain": [{"secagg": {"clients": 2}}, "noise"]}])


def test_the_aggregate_shows_no_quantisation_scale_of_the_private_client():
    """[quantize int8, secagg]: the private client's int8 scales (its own max|g|/127 per
    tensor) described its update, not the sum the server sees; they stay in the record."""
    suite = make_suite(defenses=[{"chain": [{"quantize": {"mode": "int8"}},
                                            {"secagg": {"clients": 4}}]}],
                       attacks=[{"dlg": {"steps": 2}}])
    observed = observe(attack_cells(suite)[0], CPU)
    assert "int8_scales" not in observed.obs.update.info
    assert observed.obs.update.info["secagg_clients"] == 4
    assert len(observed.private.update.info["own_int8_scales"]) > 0
    alone = observe(attack_cells(make_suite(defenses=[{"quantize": {"mode": "int8"}}]))[0], CPU)
    assert "int8_scales" in alone.obs.update.info  # without the aggregate they travel


def test_no_two_clients_of_an_aggregate_hold_the_same_image(monkeypatch):
    """The other clients' batches are drawn from the images neither the private client nor an
    earlier client holds (independent draws repeated images: on a small split most cells)."""
    import bench.data

    drawn: list[list[int]] = []
    original = bench.data.batch_indices

    def spy(*args, **kwargs):
        picked = original(*args, **kwargs)
        drawn.append(picked)
        return picked

    monkeypatch.setattr(bench.data, "batch_indices", spy)
    suite = make_suite(seeds=6, batch_size=4, datasets=[{"photos": {"size": 32}}],
                       defenses=[{"secagg": {"clients": 10}}], attacks=[{"dlg": {"steps": 2}}])
    for cell in attack_cells(suite):
        drawn.clear()
        observed = observe(cell, CPU)
        assert len(drawn) == 10 and observed.x01.shape[0] == 40
        flat = [i for batch in drawn for i in batch]
        assert len(set(flat)) == 40  # none twice (of the 408 crops of the split)
    from bench.data import batch_indices

    taken = {0, 1, 2}
    assert sorted(batch_indices(5, 2, torch.Generator().manual_seed(0), taken)) == [3, 4]
    with pytest.raises(ValueError, match="cannot give 1 more distinct"):
        batch_indices(5, 1, torch.Generator().manual_seed(0), taken)


@pytest.mark.parametrize("later", [{"clip": {"max_norm": 0.01}}, {"noise": {"scale": 0.1}}])
def test_int8_scales_stay_private_once_a_later_link_changes_the_message(later):
    """[quantize int8, clip]: the scales (max|g|/127 before clipping) would give the attacker
    the clip factor exactly; [quantize int8, noise]: each tensor's un-noised max|g|. The
    message the server sees is no longer that int8 one, so its scales do not travel."""
    chain = [{"quantize": {"mode": "int8"}}, later]
    observed = observe(attack_cells(make_suite(defenses=[{"chain": chain}]))[0], CPU)
    assert "int8_scales" not in observed.obs.update.info
    assert len(observed.private.update.info["own_int8_scales"]) > 0
    last = observe(attack_cells(make_suite(defenses=[{"chain": chain[::-1]}]))[0], CPU)
    assert "int8_scales" in last.obs.update.info  # quantised last: they describe the message
