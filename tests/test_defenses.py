"""Defenses: update-level (clip, quantize, top-k, prune, soteria), data-level (mixup, instahide),
protocol-level (secagg), and chains applied in order by the pipeline."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bench.client import compute_update
from bench.contracts import ClientSpec, DefenseContext, Update
from bench.registry import DEFENSES, LeakbenchError, ParamError
from bench.runner import run_suite
from bench.suite import attack_cells, parse_suite
from defenses.prune import Prune
from defenses.quantize import Quantize, int8_roundtrip
from defenses.soteria import (
    Soteria,
    last_linear_index,
    pruned_features,
    representation_and_input,
)
from defenses.topk import TopK
from helpers import ROOT, run_record

NUM_CLASSES = 5


def small_model(seed: int = 0) -> nn.Module:
    """A LeNet-like victim on 3×8×8 inputs: conv, sigmoid, flatten, linear (192 features)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, stride=2), nn.Sigmoid(), nn.Flatten(),
                         nn.Linear(12 * 4 * 4, NUM_CLASSES))


def batch(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g)


def fixed_sampler(seed: int = 7):
    """A deterministic stand-in for the dataset sampler; records every batch it hands out."""
    g = torch.Generator().manual_seed(seed)
    handed: list[tuple[torch.Tensor, torch.Tensor]] = []

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        xy = (torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, NUM_CLASSES, (n,), generator=g))
        handed.append(xy)
        return xy

    return sample, handed


def context(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int = 3,
            client: ClientSpec | None = None, sampler=None) -> DefenseContext:
    return DefenseContext(model, x, y, client or ClientSpec(), torch.Generator().manual_seed(seed),
                          NUM_CLASSES, sampler)


def random_update(seed: int = 0) -> Update:
    g = torch.Generator().manual_seed(seed)
    return Update([torch.randn(40, 30, generator=g), torch.randn(30, generator=g),
                   torch.randn(7, 3, 5, 5, generator=g)])


# --- registration and documentation ---------------------------------------------------------

NEW = ("clip", "dpsgd", "quantize", "topk", "soteria", "mixup", "instahide", "secagg")


@pytest.mark.parametrize("name", NEW)
def test_registered_with_docs_and_paper(name):
    entry = DEFENSES.get(name)
    assert entry.description and entry.cls.paper
    for p in entry.params:
        assert p.help, f"{name}.{p.name} has no help text"


# --- sparsification: exact fractions --------------------------------------------------------

def exact_floor(ratio: float, n: int) -> int:
    """⌊ratio·n⌋ of the real numbers: 0.7·30 is 21 although the float product is 20.99…."""
    from fractions import Fraction

    return math.floor(Fraction(str(ratio)) * n)


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.3, 0.5, 0.7, 0.9])
def test_prune_zeroes_exactly_the_fraction_per_tensor(ratio):
    update = random_update()
    out = Prune(ratio=ratio).transform_update(update, None)
    for before, after in zip(update.tensors, out.tensors):
        n = before.numel()
        assert int((after == 0).sum()) == exact_floor(ratio, n)
        kept = after != 0
        if (~kept).any() and kept.any():  # the zeroed ones are the smallest in magnitude
            assert before[~kept].abs().max() <= before[kept].abs().min()
        assert torch.equal(after[kept], before[kept])


def test_prune_count_is_robust_to_float_noise():
    t = torch.arange(1.0, 91.0)  # 0.7 · 90 is 62.99999999999999 in floats
    out = Prune(ratio=0.7).transform_update(Update([t]), None)
    assert int((out.tensors[0] == 0).sum()) == 63


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_topk_keeps_exactly_the_fraction_per_tensor(fraction):
    update = random_update(1)
    out = TopK(fraction=fraction).transform_update(update, None)
    for before, after in zip(update.tensors, out.tensors):
        n = before.numel()
        kept = after != 0
        assert int(kept.sum()) == math.ceil(round(fraction * n, 6))
        if (~kept).any() and kept.any():
            assert before[~kept].abs().max() <= before[kept].abs().min()
        assert torch.equal(after[kept], before[kept])
    if 0 < fraction < 1:  # top-k(f) is prune(1 − f): the two keep the same entries
        pruned = Prune(ratio=1 - fraction).transform_update(update, None)
        assert all(torch.equal(a, b) for a, b in zip(out.tensors, pruned.tensors))


def test_topk_global_scope_keeps_the_fraction_of_all_entries():
    update = random_update(2)
    update.tensors[1] = update.tensors[1] * 100  # one tensor dominates globally
    out = TopK(fraction=0.02, scope="global").transform_update(update, None)
    total = sum(t.numel() for t in update.tensors)
    assert sum(int((t != 0).sum()) for t in out.tensors) == math.ceil(0.02 * total)
    assert int((out.tensors[1] != 0).sum()) == 30  # all of the large tensor survives
    assert [t.shape for t in out.tensors] == [t.shape for t in update.tensors]


# --- clipping and quantisation ----------------------------------------------------------------

def test_laplace_noise_is_finite_when_the_uniform_draw_is_zero(monkeypatch):
    """torch.rand returns exactly 0 with probability 2⁻²⁴ per entry: the inverse CDF must not
    turn it into an infinite entry."""
    monkeypatch.setattr(torch, "rand", lambda shape, generator=None, dtype=None:
                        torch.zeros(shape, dtype=dtype))
    update = random_update(2)
    out = DEFENSES.get("noise").cls(scale=0.1, distribution="laplace").transform_update(
        update, context(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long)))
    assert all(bool(torch.isfinite(t).all()) for t in out.tensors)


def noise_draw(seed: int = 3, n: int = 200_000, **params) -> torch.Tensor:
    """The noise ``noise(**params)`` adds to a zero update of ``n`` entries."""
    update = Update([torch.zeros(n, dtype=torch.float64)])
    ctx = context(nn.Linear(2, 2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), seed)
    return DEFENSES.get("noise").cls(**params).transform_update(update, ctx).tensors[0]


@pytest.mark.parametrize("distribution", ["gaussian", "laplace"])
def test_noise_variance_is_the_square_of_its_scale(distribution):
    """DLG quotes variances: variance v draws exactly the noise of standard deviation √v."""
    by_variance = noise_draw(variance=1e-2, distribution=distribution)
    assert torch.equal(by_variance, noise_draw(scale=0.1, distribution=distribution))
    assert torch.equal(noise_draw(n=100), noise_draw(n=100, scale=1e-3))  # the default std


@pytest.mark.parametrize("distribution, kurtosis", [("gaussian", 0.0), ("laplace", 3.0)])
def test_noise_has_the_variance_and_shape_of_its_distribution(distribution, kurtosis):
    """200 000 draws: sample variance within 3% of the asked variance (its standard error is
    0.3% for Gaussian, 0.6% for Laplace noise); excess kurtosis 0 (Gaussian) or 3 (Laplace)
    within 0.5 (standard errors 0.01 and 0.05)."""
    x = noise_draw(variance=1e-3, distribution=distribution)
    var = float(x.var())
    assert var == pytest.approx(1e-3, rel=0.03)
    excess = float(((x - x.mean()) ** 4).mean() / var**2) - 3
    assert abs(excess - kurtosis) < 0.5


def test_noise_takes_a_scale_or_a_variance_not_both():
    with pytest.raises(ParamError, match="not both"):
        DEFENSES.get("noise").cls(scale=0.1, variance=0.01)
    raw = {"seeds": 1, "datasets": ["digits"], "archs": ["mlp"], "attacks": ["dlg"],
           "defenses": [{"noise": {"scale": 0.1, "variance": 0.01}}]}
    with pytest.raises(LeakbenchError, match=r"defenses\[0\].*noise: give the noise's scale"):
        parse_suite(raw, source="t")


def test_noise_cells_keep_their_ids_and_label_the_parameter_given():
    """`scale` cells have the ids they had before `variance` existed (its default, None, is
    no part of the identity); the strength plotted is the parameter that is set."""
    from bench.leaderboard.frames import defense_strength

    raw = {"seeds": 1, "datasets": [{"digits": {"size": 16}}], "archs": ["lenet"],
           "attacks": [{"dlg": {"steps": 100}}],
           "defenses": [{"noise": {"scale": [0.001, 0.01]}}, {"noise": {"variance": 1e-4}}]}
    cells = attack_cells(parse_suite(raw, source="t"))
    committed = {r.stem for r in (ROOT / "results" / "quick" / "records").glob("*.json")}
    assert {c.cell_id for c in cells[:2]} <= committed  # quick's seed-0 noise cells
    assert [c.defense_label for c in cells] == ["noise(scale=0.001)", "noise(scale=0.01)",
                                                "noise(variance=0.0001)"]
    variance = [d.as_json() for d in cells[2].defense]
    assert defense_strength(variance) == 1e-4


def test_clip_global_and_per_tensor():
    update = random_update(3)
    norm = torch.sqrt(sum((t ** 2).sum() for t in update.tensors))
    out = DEFENSES.get("clip").cls(max_norm=2.0).transform_update(update, None)
    after = torch.sqrt(sum((t ** 2).sum() for t in out.tensors))
    assert after == pytest.approx(2.0, rel=1e-5)
    assert out.info["clip_norm_before"] == pytest.approx(float(norm), rel=1e-6)
    for a, b in zip(out.tensors, update.tensors):  # direction kept
        assert torch.allclose(a, b * (2.0 / norm), atol=1e-6)
    big = DEFENSES.get("clip").cls(max_norm=1e6).transform_update(update, None)
    assert all(torch.equal(a, b) for a, b in zip(big.tensors, update.tensors))
    per = DEFENSES.get("clip").cls(max_norm=1.0, scope="tensor").transform_update(update, None)
    for t in per.tensors:
        assert float(t.norm()) == pytest.approx(1.0, rel=1e-5)


def test_int8_round_trip_within_half_a_step_per_tensor():
    g = torch.Generator().manual_seed(5)
    for t in (torch.randn(1000, generator=g) * 1e-3, torch.randn(20, 20, generator=g) * 50,
              torch.tensor([0.3, -0.3, 0.0, 1e-9])):
        q, scale = int8_roundtrip(t)
        assert scale == pytest.approx(float(t.abs().max()) / 127)
        assert float((q - t).abs().max()) <= scale / 2 * (1 + 1e-5)
        assert len(torch.unique(torch.round(q / scale))) <= 255  # at most 255 levels
    update = random_update(4)
    out = Quantize(mode="int8").transform_update(update, None)
    for before, after, scale in zip(update.tensors, out.tensors, out.info["int8_scales"]):
        assert float((after - before).abs().max()) <= scale / 2 * (1 + 1e-5)
        assert float((after - before).abs().max()) > 0  # it does quantise
    zero, scale = int8_roundtrip(torch.zeros(3))
    assert scale == 0.0 and torch.equal(zero, torch.zeros(3))


def test_fp16_and_sign():
    update = random_update(5)
    half = Quantize(mode="fp16").transform_update(update, None)
    for before, after in zip(update.tensors, half.tensors):
        assert after.dtype == before.dtype
        assert torch.equal(after, before.half().float())
        assert float(((after - before).abs() / before.abs()).max()) <= 2.0 ** -11
    sign = Quantize(mode="sign").transform_update(update, None)
    for before, after in zip(update.tensors, sign.tensors):
        assert set(after.unique().tolist()) <= {-1.0, 0.0, 1.0}
        assert torch.equal(after, torch.sign(before))


# --- soteria ------------------------------------------------------------------------------------

def reference_scores(model: nn.Module, x: torch.Tensor, offset: float) -> torch.Tensor:
    """The criterion as the authors' code computes it: one backward pass per feature."""
    r, xin = representation_and_input(model, x)
    scores = torch.zeros(r.shape[1])
    for f in range(r.shape[1]):
        seed = torch.zeros_like(r)
        seed[:, f] = 1
        (g,) = torch.autograd.grad(r, xin, seed, retain_graph=True)
        scores[f] = (g.flatten(1).norm(dim=1) / (r[:, f].detach() + offset)).sum()
    return scores


@pytest.mark.parametrize("ratio", [0.0, 0.4, 0.8])
def test_soteria_prunes_the_columns_its_criterion_ranks_lowest(ratio):
    model = small_model()
    x, y = batch(2)
    update = compute_update(model, x, y, ClientSpec())
    out = Soteria(ratio=ratio, offset=0.1).transform_update(update, context(model, x, y))
    index, layer = last_linear_index(model)
    assert index == 2 and layer is model[3]
    for i, (before, after) in enumerate(zip(update.tensors, out.tensors)):
        if i != index:
            assert torch.equal(before, after)  # only the representation layer's weight
    zero_cols = (out.tensors[index] == 0).all(dim=0)
    features = out.tensors[index].shape[1]
    assert int(zero_cols.sum()) == math.floor(ratio * features)
    assert out.info["soteria_pruned_features"] == exact_floor(ratio, features)
    expected = torch.argsort(reference_scores(model, x, 0.1).abs(), stable=True)
    expected = expected[:math.floor(ratio * features)]
    assert set(torch.nonzero(zero_cols).flatten().tolist()) == set(expected.tolist())
    kept = ~zero_cols
    assert torch.equal(out.tensors[index][:, kept], update.tensors[index][:, kept])


def test_soteria_prunes_the_smallest_magnitudes_as_the_reference_masks_them():
    """The reference masks ``abs(score) < threshold`` (github.com/jeremy313/Soteria): a
    feature with a large negative score is kept, and a non-finite one is never pruned."""
    scores = torch.tensor([-5.0, 0.1, 2.0, -0.05, float("inf"), float("nan")])
    assert set(pruned_features(scores, 0.5).tolist()) == {3, 1, 2}
    assert set(pruned_features(scores, 4 / 6).tolist()) == {3, 1, 2, 0}
    # an affine representation has negative features, hence negative scores
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 16), nn.Linear(16, NUM_CLASSES))
    x, y = batch(2)
    scores = reference_scores(model, x, 0.1)
    assert (scores < 0).any()
    n = math.floor(0.5 * len(scores))
    update = compute_update(model, x, y, ClientSpec())
    out = Soteria(ratio=0.5, offset=0.1).transform_update(update, context(model, x, y))
    index, _ = last_linear_index(model)
    pruned = set(torch.nonzero((out.tensors[index] == 0).all(dim=0)).flatten().tolist())
    assert pruned == set(torch.argsort(scores.abs())[:n].tolist())
    assert pruned != set(torch.argsort(scores)[:n].tolist())  # the signed ranking differs


# --- mixup and instahide ----------------------------------------------------------------------

def test_mixup_coefficients_respect_their_bounds():
    mixup = DEFENSES.get("mixup").cls()  # k=4, c1=0, c2=0.65 as in GradAttack
    lam = mixup.draw_coefficients(3000, torch.Generator().manual_seed(0))
    assert lam.shape == (3000, 4)
    assert torch.allclose(lam.sum(1), torch.ones(3000, dtype=lam.dtype))
    assert float(lam.min()) >= 0.0 and float(lam.max()) <= 0.65
    # the private image's concentration is 3 (others 1): its coefficient is the largest on average
    means = lam.mean(0)
    assert means[0] > 0.4 and all(means[0] > means[j] + 0.15 for j in range(1, 4))
    tight = DEFENSES.get("mixup").cls(k=3, c1=0.2, c2=0.5)
    lam = tight.draw_coefficients(500, torch.Generator().manual_seed(1))
    assert float(lam.min()) >= 0.2 and float(lam.max()) <= 0.5
    with pytest.raises(ParamError):
        DEFENSES.get("mixup").cls(k=4, c1=0.0, c2=0.2)  # 4 × 0.2 < 1: no valid mixture


@pytest.mark.parametrize("name", ["mixup", "instahide"])
@pytest.mark.parametrize("params,problem", [
    ({"k": 4, "c1": 0.25, "c2": 0.25}, "positive probability"),  # one point of the simplex
    ({"k": 2, "c1": 0.5, "c2": 0.5}, "positive probability"),
    ({"k": 4, "c1": 0.0, "c2": 0.2}, "positive probability"),  # 4 × 0.2 < 1
    ({"k": 4, "c2": 0.26}, "probability about"),  # feasible, ~2 draws in 100 000 accepted
    ({"k": 4, "alpha_private": 1000.0}, "probability about"),  # λ₀ ≈ 0.997 > c2
])
def test_a_coefficient_box_that_is_never_or_almost_never_drawn_is_refused_at_load(
        tmp_path, name, params, problem):
    from bench.suite import SuiteError, load_suite
    from helpers import write_suite

    path = write_suite(tmp_path / "v.yaml", defenses=[{name: params}])
    with pytest.raises(SuiteError) as err:
        load_suite(str(path))
    message = str(err.value)
    assert message.startswith(f"{path}: defenses[0][0].{name}: ") and problem in message
    assert "\n" not in message


def test_an_infeasible_mixup_box_exits_2_with_one_line(tmp_path):
    from helpers import run_cli, write_suite

    path = write_suite(tmp_path / "v.yaml", defenses=[{"mixup": {"k": 2, "c1": 0.5, "c2": 0.5}}])
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert f"{path}: defenses[0][0].mixup: coefficients in [c1=0.5, c2=0.5]" in line


def test_the_acceptance_estimate_keeps_boxes_the_sampler_meets():
    from defenses.mixup import MIN_ACCEPTANCE, acceptance_rate

    assert acceptance_rate((3.0, 1.0, 1.0, 1.0), 0.0, 0.65) > 0.5  # GradAttack's box
    assert acceptance_rate((3.0, 1.0, 1.0), 0.2, 0.5) > 10 * MIN_ACCEPTANCE
    for k, c2 in ((4, 0.3), (64, 0.05)):  # tight but met: they load and draw
        mixup = DEFENSES.get("mixup").cls(k=k, c2=c2)
        lam = mixup.draw_coefficients(4, torch.Generator().manual_seed(0))
        assert float(lam.max()) <= c2
    assert DEFENSES.get("mixup").cls(k=1, c1=0.9, c2=0.9).k == 1  # no draw to bound


@pytest.mark.parametrize("name", ["mixup", "instahide"])
def test_mixup_and_instahide_mix_images_and_labels_with_the_same_coefficients(name):
    model = small_model()
    x, y = batch(3)
    sampler, handed = fixed_sampler()
    defense = DEFENSES.get(name).cls(k=4)
    mx, my = defense.transform_batch(x, y, context(model, x, y, sampler=sampler))
    lam = defense.coefficients
    assert lam.shape == (3, 4)
    (ox, oy), = handed  # one draw of B·(k−1) other images
    ox, oy = ox.view(3, 3, 3, 8, 8), oy.view(3, 3)
    onehot = torch.nn.functional.one_hot
    expected_x = lam[:, 0].view(-1, 1, 1, 1).float() * x
    expected_y = lam[:, :1].float() * onehot(y, NUM_CLASSES)
    for j in range(1, 4):
        expected_x = expected_x + lam[:, j].view(-1, 1, 1, 1).float() * ox[j - 1]
        expected_y = expected_y + lam[:, j:j + 1].float() * onehot(oy[j - 1], NUM_CLASSES)
    assert my.shape == (3, NUM_CLASSES)
    assert torch.allclose(my, expected_y, atol=1e-6)
    assert torch.allclose(my.sum(1), torch.ones(3), atol=1e-6)
    if name == "mixup":
        assert torch.allclose(mx, expected_x, atol=1e-6)
    else:  # the same mixture, each entry's sign flipped at random
        assert torch.allclose(mx.abs(), expected_x.abs(), atol=1e-6)
        flipped = (torch.sign(mx) != torch.sign(expected_x)).float().mean()
        assert 0.35 < float(flipped) < 0.65
    # the coefficients reach the record through the update's info
    info = defense.transform_update(Update([torch.zeros(1)]), None).info
    assert json.loads(json.dumps(info))[f"{name}_coefficients"] == lam.tolist()


def test_mixup_with_k1_is_the_identity_with_one_hot_labels():
    x, y = batch(2)
    mixup = DEFENSES.get("mixup").cls(k=1)
    mx, my = mixup.transform_batch(x, y, context(small_model(), x, y))
    assert torch.equal(mx, x)
    assert torch.equal(my, torch.nn.functional.one_hot(y, NUM_CLASSES).float())


# --- secure aggregation -----------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["fedsgd", "fedavg"])
def test_secagg_is_the_mean_of_k_client_updates(mode):
    client = ClientSpec(mode=mode, local_epochs=2, lr=0.05)
    model = small_model()
    x, y = batch(2)
    own = compute_update(model, x, y, client)
    sampler, handed = fixed_sampler()
    secagg = DEFENSES.get("secagg").cls(clients=3)
    out = secagg.transform_update(own, context(model, x, y, client=client, sampler=sampler))
    assert len(handed) == 2 and all(len(hx) == 2 for hx, _ in handed)  # K−1 batches of size B
    others = [compute_update(model, hx, hy, client) for hx, hy in handed]
    for i, t in enumerate(out.tensors):
        expected = (own.tensors[i] + others[0].tensors[i] + others[1].tensors[i]) / 3
        assert torch.allclose(t, expected, atol=1e-7)
    assert out.kind == ("gradient" if mode == "fedsgd" else "delta")
    assert out.info["secagg_clients"] == 3
    total = DEFENSES.get("secagg").cls(clients=3, reduce="sum").transform_update(
        own, context(model, x, y, client=client, sampler=fixed_sampler()[0]))
    assert all(torch.allclose(a, 3 * b, atol=1e-6) for a, b in zip(total.tensors, out.tensors))
    single = DEFENSES.get("secagg").cls(clients=1).transform_update(own, context(model, x, y))
    assert single is own


@pytest.mark.slow
def test_secagg_with_four_clients_lowers_dlg_psnr(tmp_path, one_thread):
    suite = parse_suite({
        "name": "secagg-check", "seeds": 3, "batch_size": 1,
        "datasets": [{"photos": {"size": 16}}], "archs": ["lenet"],
        # 30 L-BFGS steps: enough for undefended DLG to converge on every seed (at 10 it
        # stops at 200 evaluations, and whether it has converged depends on the start)
        "defenses": [{"secagg": {"clients": [1, 4]}}], "attacks": [{"dlg": {"steps": 30}}],
    })
    summary = run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert summary.counts["ok"] == 6
    psnr: dict[tuple[int, int], float] = {}
    for path in tmp_path.rglob("*.json"):
        record = json.loads(path.read_text())
        if record.get("status") == "ok":
            clients = record["defense"][0]["params"]["clients"]
            psnr[(clients, record["seed"])] = record["metrics"]["psnr"]
    assert len(psnr) == 6
    for seed in range(3):  # the same private image and model for both K
        assert psnr[(4, seed)] < psnr[(1, seed)]
    mean1 = sum(psnr[(1, s)] for s in range(3)) / 3
    mean4 = sum(psnr[(4, s)] for s in range(3)) / 3
    assert mean4 < mean1 - 10


# --- chains -------------------------------------------------------------------------------------

def test_chain_applies_its_links_in_order(one_thread):
    suite = parse_suite({
        "name": "chain-check", "seeds": 1, "datasets": [{"photos": {"size": 16}}],
        "archs": ["lenet"], "attacks": [{"dlg": {"steps": 1}}],
        "defenses": [{"chain": [{"topk": {"fraction": 0.1}}, {"clip": {"max_norm": 0.5}}]},
                     {"chain": [{"clip": {"max_norm": 0.5}}, {"topk": {"fraction": 0.1}}]}],
    })
    cells = attack_cells(suite)
    assert [[d.name for d in c.defense] for c in cells] == [["topk", "clip"], ["clip", "topk"]]
    records = [run_record(c, 20.0) for c in cells]
    assert all(r["status"] in ("ok", "diverged") for r in records), records
    topk_first, clip_first = (r["defense_info"]["clip_norm_before"] for r in records)
    # clip sees the sparsified update in one order and the full one in the other
    assert 0 < topk_first < clip_first
    # and the same private batch and model underlie both cells
    assert records[0]["derived_seeds"]["scenario"] == records[1]["derived_seeds"]["scenario"]


@pytest.mark.parametrize("chain, ok", [
    (["mixup", "dpsgd"], True),                       # data-level links first: honoured
    (["dpsgd", {"prune": {"ratio": 0.3}}], True),     # update-level links after: applied
    ([{"prune": {"ratio": 0.3}}, "dpsgd"], False),    # would be silently discarded
    ([{"secagg": {"clients": 2}}, "dpsgd"], False),
])
def test_chain_rejects_links_dpsgd_would_discard(chain, ok):
    from bench.suite import SuiteError

    raw = {"name": "c", "datasets": ["digits"], "archs": ["lenet"], "attacks": ["dlg"],
           "defenses": [{"chain": chain}]}
    if ok:
        assert parse_suite(raw).defenses
    else:
        with pytest.raises(SuiteError, match="dpsgd recomputes the update"):
            parse_suite(raw)


def test_the_server_sees_only_public_update_metadata():
    """The client's loss, mixing coefficients and per-sample norms stay in the record; the
    secure-aggregation count and int8 scales travel with the update."""
    from bench.contracts import shared_update

    update = Update([torch.ones(3)], "gradient", [(torch.zeros(1), torch.ones(1))],
                    {"loss": 2.3, "mixup_coefficients": [0.6, 0.4], "dp_per_sample_norms": [1.0],
                     "clip_norm_before": 5.0, "aggregate_of": 4, "secagg_clients": 4,
                     "int8_scales": [0.1]})
    shared = shared_update(update)
    assert shared.info == {"aggregate_of": 4, "secagg_clients": 4, "int8_scales": [0.1]}
    assert shared.bn_stats is None
    # the same values, in copies: an attack editing its observation cannot reach the client
    assert all(torch.equal(a, b) and a is not b for a, b in zip(shared.tensors, update.tensors))
    assert "loss" in update.info  # the record keeps everything
