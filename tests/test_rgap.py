"""R-GAP (attacks/rgap.py and its rgap_* modules): recovery, scope, noise, batches, solver."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.grad import conv2d_input, conv2d_weight

from attacks import rgap_activations as ra
from attacks import rgap_gram as rg
from attacks import rgap_solver as rs
from attacks.rgap import RGAP, parse_chain
from bench.client import compute_update
from bench.contracts import CellContext, ClientSpec, Observation
from bench.domains import PixelBox
from bench.scoring import score
from bench.suite import attack_cells
from helpers import make_suite, run_record, scored_path

CPU = torch.device("cpu")


def _cell_record(arch, dataset, defense="none", seed=0, attack=None, batch_size=1):
    suite = make_suite(datasets=[dataset], archs=[arch], defenses=[defense],
                       attacks=[attack or "rgap"], seeds=[seed], batch_size=batch_size)
    (cell,) = attack_cells(suite)
    return cell, run_record(cell, 20.0)


def _observation(model, x, y, input_shape):
    update = compute_update(model, x, y, ClientSpec())
    c = input_shape[0]
    return Observation(model=copy.deepcopy(model), update=update, batch_size=len(x),
                       domain=PixelBox(input_shape, (0.0,) * c, (1.0,) * c), num_classes=10,
                       client=ClientSpec(),
                       generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------------------------------------
# recovery from undefended gradients


def test_cnn6_recovers_a_32px_photo_above_45db():
    cell, rec = _cell_record("cnn6", {"photos": {"size": 32}})
    assert rec["status"] == "ok", rec.get("error")
    assert rec["metrics"]["psnr"] >= 45.0
    assert rec["iterations"] == 7 and rec["grad_evals"] == 0
    assert rec["metrics"]["label_acc"] is None  # a single logit: no class to infer
    info = rec["attack_info"]
    json.dumps(info)  # diagnostics are plain JSON
    assert len(info["layer_residual_gradient"]) == 7
    assert max(v for v in info["layer_residual_gradient"] if v is not None) < 1e-4


@pytest.mark.parametrize("head", ["logit", "linear"])
def test_fcn3_recovers_a_digit_above_45db(head):
    cell, rec = _cell_record({"fcn3": {"head": head}}, {"digits": {"size": 28}})
    assert rec["status"] == "ok", rec.get("error")
    assert rec["metrics"]["psnr"] >= 45.0
    if head == "linear":  # the biased head's gradient gives the class
        assert rec["metrics"]["label_acc"] == 1.0
    else:
        assert rec["metrics"]["label_acc"] is None


def test_cnn6_linear_head_on_small_images():
    cell, rec = _cell_record({"cnn6": {"head": "linear"}}, {"photos": {"size": 16}}, seed=1)
    assert rec["status"] == "ok", rec.get("error")
    assert rec["metrics"]["psnr"] >= 45.0
    assert rec["metrics"]["label_acc"] == 1.0


def test_both_label_signs_and_both_logit_roots_are_resolved():
    """Without the label, y = ±1 and (for w·∇w < 0) two logits explain the top gradient."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 96, bias=False), nn.LeakyReLU(0.2),
                          nn.Linear(96, 1, bias=False))
    x = torch.rand(1, 1, 8, 8)
    seen_roots = set()
    for label in (0, 1):
        for scale in (1.0, 40.0):  # a large logit puts u = yμ far from 0
            with torch.no_grad():
                model[3].weight.mul_(scale)
            obs = _observation(model, x, torch.tensor([label]), (1, 8, 8))
            rec = RGAP().reconstruct(obs)
            with torch.no_grad():
                model[3].weight.div_(scale)
            seen_roots.add(len(rec.info["roots"]))
            m = score(x, torch.tensor([label]), rec.data.clamp(0, 1), None, 20.0)
            assert m["psnr"] >= 45.0, (label, scale, rec.info)
    assert seen_roots == {1, 2}  # both the unique-root and the two-root case were exercised


@pytest.mark.parametrize("act", [nn.Sigmoid, nn.Tanh, nn.Identity])
def test_other_invertible_activations(act):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1, bias=False), act(),
                          nn.Conv2d(6, 16, 3, padding=1, bias=False), act(), nn.Flatten(),
                          nn.Linear(16 * 144, 1, bias=False))
    x = torch.rand(1, 1, 12, 12)
    for label in (0, 1):
        rec = RGAP().reconstruct(_observation(model, x, torch.tensor([label]), (1, 12, 12)))
        m = score(x, torch.tensor([label]), rec.data.clamp(0, 1), None, 20.0)
        assert m["psnr"] >= 45.0, (act.__name__, label)


# ---------------------------------------------------------------------------------------------
# scope: incompatible networks are skipped with their reason


def _ctx(arch, params, shape=(3, 16, 16), mode="fedsgd"):
    return CellContext(arch, params, "photos", shape, 8, 1, ClientSpec(mode=mode), frozenset())


def test_lenet_with_relu_is_skipped_with_reasons():
    suite = make_suite(archs=[{"lenet": {"activation": "relu"}}], attacks=["rgap"])
    (cell,) = attack_cells(suite)
    assert cell.skip_reason is not None
    assert "ReLU" in cell.skip_reason and "not invertible" in cell.skip_reason
    assert "bias" in cell.skip_reason
    rec = run_record(cell, 20.0)
    assert rec["status"] == "skipped"


def test_unsupported_models_give_reasons_not_crashes():
    cases = {
        "normalisation": nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4),
                                       nn.LeakyReLU(0.2), nn.Flatten(),
                                       nn.Linear(4 * 14 * 14, 1, bias=False)),
        "pooling": nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.LeakyReLU(0.2),
                                 nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 49, 1, bias=False)),
        "nn.Sequential": nn.Conv2d(3, 1, 16, bias=False),  # not a chain R-GAP can follow
        "bias": nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(),
                              nn.Linear(4 * 14 * 14, 1, bias=False)),
        "several outputs": nn.Sequential(nn.Flatten(), nn.Linear(768, 10, bias=False)),
        "top layer must be a Linear": nn.Sequential(nn.Conv2d(3, 1, 16, bias=False)),
    }
    for needle, model in cases.items():
        chain, reason = parse_chain(model, (3, 16, 16))
        assert chain is None and needle in reason, (needle, reason)
    assert "fedavg client shares a delta" in RGAP().skip_reason(_ctx("cnn6", {}, mode="fedavg"))
    assert RGAP().skip_reason(_ctx("cnn6", {})) is None
    assert RGAP().incompatibility(_ctx("fcn3", {"head": "linear"})) is None


def test_residual_block_is_skipped():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.head = nn.Linear(3 * 16 * 16, 1, bias=False)

        def forward(self, x):
            return self.head((x + self.conv(x)).flatten(1))

    chain, reason = parse_chain(Residual(), (3, 16, 16))
    assert chain is None and "residual" in reason


# ---------------------------------------------------------------------------------------------
# noise, batches


def test_psnr_falls_as_noise_rises():
    psnrs = []
    for scale in (0.0, 1e-4, 1e-3, 1e-2):
        defense = "none" if scale == 0 else {"noise": {"scale": scale}}
        _, rec = _cell_record("fcn3", {"digits": {"size": 28}}, defense=defense)
        assert rec["status"] == "ok", rec.get("error")
        psnrs.append(rec["metrics"]["psnr"])
    assert all(a > b for a, b in zip(psnrs, psnrs[1:])), psnrs
    assert psnrs[0] >= 90.0 and psnrs[-1] < 25.0


def _noisy_cnn6_observation(seed: int, scale: float) -> tuple[Observation, torch.Tensor]:
    """CNN6's gradient of one photo in float64, plus seeded N(0, scale²) noise: the noise, not
    a CPU's float32 rounding, decides which near-zero pre-activations change sign (the float32
    cell this replaced collapsed on one CPU's kernels and not on another's)."""
    from bench.archs.cnn6 import CNN6
    from bench.registry import DATASETS

    torch.manual_seed(seed)
    model = CNN6().build((3, 32, 32), 10).double()
    x = DATASETS.get("photos").cls(size=32).load("train")[seed][0][None].double()
    obs = _observation(model, x, torch.tensor([seed % 10]), (3, 32, 32))
    gen = torch.Generator().manual_seed(100 + seed)
    obs.update.tensors = [t + scale * torch.randn(t.shape, generator=gen, dtype=t.dtype)
                          for t in obs.update.tensors]
    return obs, x


def test_sign_refinement_resolves_only_where_noise_flipped_a_sign():
    """Refinement re-solves a layer with the signs of its own forward prediction: a no-op
    where every sign agrees (noise far below the pre-activations), a different solution where
    noise flipped some, and never more flips per pass than its cap (many disagreements mean
    the layer above is already wrong)."""
    quiet, _ = _noisy_cnn6_observation(0, 1e-10)
    plain, refined = RGAP(refine_signs=0).reconstruct(quiet), RGAP().reconstruct(quiet)
    assert torch.equal(plain.data, refined.data)
    assert not any(refined.info["layer_sign_flips"][1:])
    flipped_any = False
    for seed in range(3):
        obs, _ = _noisy_cnn6_observation(seed, 1e-8)
        plain, refined = RGAP(refine_signs=0).reconstruct(obs), RGAP().reconstruct(obs)
        flips = [v or 0 for v in refined.info["layer_sign_flips"]]
        if sum(flips):
            flipped_any = True
            assert not torch.equal(plain.data, refined.data)
        chain, _ = parse_chain(obs.model, (3, 32, 32))
        for stage, count in zip(chain.stages[-2::-1], flips[1:]):  # top layer first
            assert count <= 3 * max(10, 0.01 * math.prod(stage.out_shape))  # 3 passes
    assert flipped_any  # at 1e-8 noise CNN6 has near-zero pre-activations that change sign


def test_batch_of_two_recovers_one_mixture():
    """At batch 2 the shared gradient is a mean: FCN3 with a biased head returns one image,
    a mixture that lies in the span of the two private images and matches neither."""
    cell, rec = _cell_record({"fcn3": {"head": "linear"}}, {"digits": {"size": 28}},
                             batch_size=2)
    assert rec["status"] == "ok", rec.get("error")
    x01, recon01, metrics = scored_path(cell)
    assert recon01.shape == x01.shape  # the mixture fills both slots
    assert torch.equal(recon01[0], recon01[1])
    a = recon01[0].flatten().double()
    basis = x01.flatten(1).double().T
    coef = torch.linalg.lstsq(basis, a[:, None]).solution
    span_residual = float((basis @ coef)[:, 0].sub(a).norm() / a.norm())
    assert span_residual < 0.15
    assert all(c > 0.2 for c in coef.flatten().tolist())  # both images contribute
    assert max(metrics["per_image"]["psnr"]) < 30.0


def test_labels_of_a_batch_may_repeat_a_class():
    """With a biased head at batch > 1, R-GAP took the B most negative entries of the bias
    gradient: B distinct classes, so a batch of three 3s and a 7 scored at most 0.5 (an
    R-GAP hunt). It now reads Geng et al.'s counts, as the analytic label attacks do."""
    from bench.archs.fcn3 import FCN3

    torch.manual_seed(0)
    model = FCN3(head="linear").build((1, 28, 28), 10)
    y = torch.tensor([3, 3, 3, 7])
    rec = RGAP().reconstruct(_observation(model, torch.rand(4, 1, 28, 28), y, (1, 28, 28)))
    assert sorted(rec.labels.tolist()) == [3, 3, 3, 7]


# ---------------------------------------------------------------------------------------------
# the solver


@pytest.mark.parametrize("in_shape,out,kernel,stride,padding", [
    ((3, 11, 9), 5, (3, 3), (2, 2), (1, 1)),
    ((2, 8, 6), 4, (2, 3), (1, 2), (0, 1)),
    ((4, 7, 7), 3, (4, 4), (3, 3), (2, 2)),
])
def test_gram_matrices_match_the_operators(in_shape, out, kernel, stride, padding):
    g = torch.Generator().manual_seed(1)
    w = torch.randn(out, in_shape[0], *kernel, generator=g, dtype=torch.float64)
    x = torch.randn(1, *in_shape, generator=g, dtype=torch.float64)
    z = F.conv2d(x, w, stride=stride, padding=padding)
    k = torch.randn(z.shape, generator=g, dtype=torch.float64)
    v = torch.randn(in_shape, generator=g, dtype=torch.float64)
    fwd = conv2d_input((1, *in_shape), w, F.conv2d(v[None], w, stride=stride, padding=padding),
                       stride=stride, padding=padding)
    grad = conv2d_input((1, *in_shape), conv2d_weight(v[None], w.shape, k, stride=stride,
                                                      padding=padding),
                        k, stride=stride, padding=padding)
    vl = rg.channel_last(v)
    gf = rg.conv_forward_gram(w, in_shape, stride, padding)
    gg = rg.conv_gradient_gram(k[0], in_shape, kernel, stride, padding)
    assert torch.allclose(gf @ vl, rg.channel_last(fwd), rtol=1e-10, atol=1e-10)
    assert torch.allclose(gg @ vl, rg.channel_last(grad), rtol=1e-10, atol=1e-10)


def test_solve_conv_recovers_a_determined_input_exactly():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(16, 3, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(3, 10, 10, generator=g, dtype=torch.float64)
    z = F.conv2d(x[None], w, stride=2, padding=1)[0]
    k = torch.randn(z.shape, generator=g, dtype=torch.float64)
    grad_w = conv2d_weight(x[None], w.shape, k[None], stride=2, padding=1)
    res = rs.solve_conv(w, grad_w, k, z, (3, 10, 10), (2, 2), (1, 1), ridge=0.0)
    assert torch.allclose(res.x, x, rtol=1e-8, atol=1e-8)
    # the gradient residual comes from the normal equations: its floor is ~1e-8
    assert res.info["residual_gradient"] < 1e-6 and res.info["residual_forward"] < 1e-10


@pytest.mark.parametrize("c", [0.3, 1e-6, 0.0, -1e-6, -0.1, ra.F_MIN / 2])
def test_invert_udldu_roots(c):
    roots = ra.invert_udldu(c)
    assert len(roots) == (2 if c < 0 else 1)
    for u in roots:
        assert math.isclose(ra.udldu(u), c, rel_tol=1e-9, abs_tol=1e-15)
    assert ra.invert_udldu(ra.F_MIN * 1.5) == [ra.U_STAR]  # below the minimum: noise
