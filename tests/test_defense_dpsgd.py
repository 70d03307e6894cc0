"""DP-SGD: ε from Opacus's accountant, per-sample clipping, noise units, BatchNorm skipping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from bench.client import compute_update
from bench.contracts import Arch, CellContext, ClientSpec, DefenseContext, Update
from bench.registry import ARCHS, DATASETS, Entry
from bench.suite import attack_cells, parse_suite
from defenses.dpsgd import DPSGD, dp_epsilon, per_sample_gradients

NUM_CLASSES = 4


def model_and_batch(n: int = 4, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1, stride=2), nn.Sigmoid(), nn.Flatten(),
                          nn.Linear(6 * 4 * 4, NUM_CLASSES))
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(n, 3, 8, 8, generator=g) * 4  # large inputs: large, varied gradient norms
    return model, x, torch.randint(0, NUM_CLASSES, (n,), generator=g)


def run(defense: DPSGD, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
        client: ClientSpec | None = None, seed: int = 0) -> Update:
    client = client or ClientSpec()
    ctx = DefenseContext(model, x, y, client, torch.Generator().manual_seed(seed), NUM_CLASSES)
    return defense.transform_update(compute_update(model, x, y, client), ctx)


def one_sample_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    return compute_update(model, x[None], y[None], ClientSpec()).tensors


# --- accounting -----------------------------------------------------------------------------

def test_epsilon_reproduces_abadi_et_al_moments_accountant_figure():
    """Abadi et al. 2016, Sec. 3.1: q = 0.01, σ = 4, δ = 1e-5, T = 10 000 → ε ≈ 1.26.

    The paper's moments accountant converts with ε = min_λ (α(λ) + log 1/δ)/λ over integer
    λ. Opacus's RDP curve with that classic conversion gives the published figure; the ε we
    report uses Opacus's tighter conversion, so it must be at most that.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = np.arange(2, 256)
    rdp = compute_rdp(q=0.01, noise_multiplier=4.0, steps=10_000, orders=orders)
    classic = float(np.min(rdp + np.log(1 / 1e-5) / (orders - 1)))
    assert classic == pytest.approx(1.26, abs=0.005)
    eps, _ = dp_epsilon(4.0, 0.01, 10_000, 1e-5, "rdp")
    assert 0.9 < eps <= classic


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("sigma,q,steps", [(4.0, 0.01, 10_000), (1.1, 256 / 60_000, 2_000)])
def test_epsilon_matches_opacus_accountant_called_independently(accountant, sigma, q, steps):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for _ in range(steps):  # the accountant's own step-by-step path
        acc.step(noise_multiplier=sigma, sample_rate=q)
    expected = acc.get_epsilon(delta=1e-5)
    defense = DPSGD(noise_multiplier=sigma, sample_rate=q, steps=steps, delta=1e-5,
                    accountant=accountant)
    info = defense.privacy()
    assert info["epsilon"] == pytest.approx(expected, rel=1e-9)
    assert info["delta"] == 1e-5 and info["dp_steps"] == steps


def test_epsilon_is_reported_in_the_update_info_as_json():
    model, x, y = model_and_batch(2)
    out = run(DPSGD(noise_multiplier=1.0, sample_rate=0.01, steps=1000), model, x, y)
    info = json.loads(json.dumps(out.info, allow_nan=False))
    eps, _ = dp_epsilon(1.0, 0.01, 1000, 1e-5, "rdp")
    assert info["epsilon"] == pytest.approx(eps)
    assert 0 < info["epsilon"] < 10
    assert len(info["dp_per_sample_norms"]) == 2
    no_noise = run(DPSGD(noise_multiplier=0.0), model, x, y)
    assert no_noise.info["epsilon"] is None and "no differential privacy" in \
        no_noise.info["epsilon_note"]
    assert DPSGD(noise_multiplier=0.5, steps=100).privacy()["epsilon"] > \
        DPSGD(noise_multiplier=2.0, steps=100).privacy()["epsilon"]


# --- clipping and noise ------------------------------------------------------------------------

def test_per_sample_gradients_match_one_backward_per_sample():
    model, x, y = model_and_batch(3)
    per_sample = per_sample_gradients(model, x, y)
    for i in range(3):
        for ps, single in zip(per_sample, one_sample_gradient(model, x[i], y[i])):
            assert torch.allclose(ps[i], single, atol=1e-6)
    soft = torch.softmax(torch.randn(3, NUM_CLASSES), dim=1)  # soft labels (after MixUp)
    per_soft = per_sample_gradients(model, x, soft)
    single = compute_update(model, x[1:2], soft[1:2], ClientSpec()).tensors
    assert all(torch.allclose(p[1], s, atol=1e-6) for p, s in zip(per_soft, single))


def test_dpsgd_clips_every_sample_before_averaging():
    """σ = 0: the update is the mean of the per-sample gradients, each clipped to C."""
    model, x, y = model_and_batch(4)
    singles = [one_sample_gradient(model, x[i], y[i]) for i in range(4)]
    norms = [float(torch.sqrt(sum((t ** 2).sum() for t in g))) for g in singles]
    clip = sorted(norms)[1] * 1.01  # between the norms: some samples clipped, some not
    assert sum(n > clip for n in norms) >= 2 and sum(n <= clip for n in norms) >= 1
    out = run(DPSGD(max_grad_norm=clip, noise_multiplier=0.0), model, x, y)
    for i, g in enumerate(singles):
        factor = min(1.0, clip / (norms[i] + 1e-6))
        clipped = torch.sqrt(sum(((t * factor) ** 2).sum() for t in g))
        assert float(clipped) <= clip  # every per-sample gradient within C before noise
    expected = [sum(g[j] * min(1.0, clip / (norms[i] + 1e-6)) for i, g in enumerate(singles)) / 4
                for j in range(len(singles[0]))]
    for got, want in zip(out.tensors, expected):
        assert torch.allclose(got, want, atol=1e-6)
    assert out.info["dp_per_sample_norms"] == pytest.approx(norms, rel=1e-5)
    assert out.info["dp_clipped_fraction"] == pytest.approx(sum(n > clip for n in norms) / 4)
    # the plain batch gradient is not what DP-SGD shares when samples are clipped
    plain = compute_update(model, x, y, ClientSpec()).tensors
    assert not all(torch.allclose(a, b, atol=1e-4) for a, b in zip(out.tensors, plain))

def test_dpsgd_counts_as_clipped_every_sample_it_scales_down():
    """A sample whose norm is C itself is scaled by C/(C + 1e-6) < 1 (Opacus's guard): it
    was clipped, and the recorded fraction says so."""
    model, x, y = model_and_batch(4)
    first = run(DPSGD(max_grad_norm=1e6, noise_multiplier=0.0), model, x, y)
    norms = first.info["dp_per_sample_norms"]
    clip = max(norms)  # the largest sample sits exactly on the bound
    out = run(DPSGD(max_grad_norm=clip, noise_multiplier=0.0), model, x, y)
    scaled = [i for i, n in enumerate(out.info["dp_per_sample_norms"]) if clip / (n + 1e-6) < 1]
    assert norms.index(clip) in scaled
    assert out.info["dp_clipped_fraction"] == pytest.approx(len(scaled) / 4)


def test_dpsgd_counts_the_samples_its_float32_factors_scale(monkeypatch):
    """In float32 C/(norm + 1e-6) is exactly 1 for a norm of C above about 32: that sample
    is not scaled and not counted; a norm of C below it is both."""
    import defenses.dpsgd as dpsgd

    model, x, y = model_and_batch(4)
    for clip, counted in ((100.0, 0.0), (0.5, 0.5)):
        monkeypatch.setattr(dpsgd, "dp_update", lambda *a, c=clip, **k: (
            [torch.zeros(1)], "gradient", [c, c / 2]))
        out = run(DPSGD(max_grad_norm=clip, noise_multiplier=0.0), model, x, y)
        factors = dpsgd.clip_factors(torch.tensor([clip, clip / 2]), clip)
        assert out.info["dp_clipped_fraction"] == float((factors < 1).float().mean()) == counted



def test_dpsgd_single_sample_norm_is_min_of_norm_and_clip():
    model, x, y = model_and_batch(1)
    norm = float(torch.sqrt(sum((t ** 2).sum() for t in one_sample_gradient(model, x[0], y[0]))))
    for clip in (norm / 10, norm * 10):
        out = run(DPSGD(max_grad_norm=clip, noise_multiplier=0.0), model, x, y)
        got = float(torch.sqrt(sum((t ** 2).sum() for t in out.tensors)))
        assert got == pytest.approx(min(norm, clip), rel=1e-4)


def test_dpsgd_noise_is_a_standard_deviation_of_sigma_c_over_b():
    model, x, y = model_and_batch(2)
    clean = run(DPSGD(max_grad_norm=0.5, noise_multiplier=0.0), model, x, y)
    noisy = run(DPSGD(max_grad_norm=0.5, noise_multiplier=3.0), model, x, y, seed=11)
    diff = torch.cat([(a - b).flatten() for a, b in zip(noisy.tensors, clean.tensors)])
    assert diff.numel() > 400
    expected_std = 3.0 * 0.5 / 2  # σ·C on the sum, divided by the batch size
    assert float(diff.std()) == pytest.approx(expected_std, rel=0.1)
    assert abs(float(diff.mean())) < 0.2 * expected_std
    again = run(DPSGD(max_grad_norm=0.5, noise_multiplier=3.0), model, x, y, seed=11)
    assert all(torch.equal(a, b) for a, b in zip(again.tensors, noisy.tensors))  # seeded


def test_dpsgd_fedavg_is_local_training_on_noisy_clipped_steps():
    model, x, y = model_and_batch(2)
    one_step = ClientSpec(mode="fedavg", local_epochs=1, lr=0.3)
    delta = run(DPSGD(max_grad_norm=0.1, noise_multiplier=0.0), model, x, y, one_step)
    grad = run(DPSGD(max_grad_norm=0.1, noise_multiplier=0.0), model, x, y)
    assert delta.kind == "delta" and grad.kind == "gradient"
    for d, g in zip(delta.tensors, grad.tensors):  # one local step: delta = −lr · DP gradient
        assert torch.allclose(d, -0.3 * g, atol=1e-6)
    three = run(DPSGD(max_grad_norm=0.1, noise_multiplier=0.0), model, x, y,
                ClientSpec(mode="fedavg", local_epochs=3, lr=0.3))
    step_norm = torch.sqrt(sum((t ** 2).sum() for t in three.tensors))
    assert float(step_norm) <= 3 * 0.3 * 0.1 * (1 + 1e-5)  # each step moves at most lr·C
    assert len(three.info["dp_per_sample_norms"]) == 6


# --- BatchNorm ----------------------------------------------------------------------------------

class _BNNet(Arch):
    """A conv-BatchNorm net, registered only for the duration of one test."""

    def build(self, input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(nn.Conv2d(c, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * h * w, num_classes))


def test_dpsgd_is_skipped_on_a_batchnorm_model(monkeypatch):
    ARCHS.load()
    monkeypatch.setitem(ARCHS._entries, "_bn_test_net", Entry("_bn_test_net", _BNNet, "arch"))
    monkeypatch.setattr(_BNNet, "registry_name", "_bn_test_net")
    ctx = CellContext("_bn_test_net", {}, "photos", (3, 16, 16), 8, 1, ClientSpec(),
                      frozenset())
    reason = DPSGD().incompatibility(ctx)
    assert reason and "BatchNorm" in reason
    lenet_ctx = CellContext("lenet", {}, "photos", (3, 16, 16), 8, 1, ClientSpec(), frozenset())
    assert DPSGD().incompatibility(lenet_ctx) is None
    suite = parse_suite({"name": "dp-bn", "datasets": [{"photos": {"size": 16}}],
                         "archs": ["_bn_test_net", "lenet"], "defenses": ["dpsgd"],
                         "attacks": [{"dlg": {"steps": 1}}]})
    cells = {c.arch.name: c for c in attack_cells(suite)}
    assert cells["_bn_test_net"].skip_reason.startswith("dpsgd: ")
    assert "BatchNorm" in cells["_bn_test_net"].skip_reason
    assert cells["lenet"].skip_reason is None
    with pytest.raises(ValueError, match="BatchNorm"):  # and never runs on one by accident
        model = _BNNet().build((3, 8, 8), NUM_CLASSES)
        x = torch.rand(2, 3, 8, 8)
        y = torch.tensor([0, 1])
        run(DPSGD(), model, x, y)


def test_defense_leaderboard_shows_epsilon_for_dpsgd_only(tmp_path):
    from bench.leaderboard import write_leaderboard
    from bench.runner import run_suite
    from helpers import make_suite

    suite = make_suite(defenses=["none", {"dpsgd": {"noise_multiplier": 2.0}}],
                       attacks=[{"idlg": {"steps": 2}}])
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    section = write_leaderboard(tmp_path).read_text().split("## Defenses")[1]
    header = next(line for line in section.splitlines() if line.startswith("| Rank"))
    assert "| ε " in header
    eps, _ = dp_epsilon(2.0, 0.01, 1000, 1e-5)
    rows = {line.split("|")[2].strip(): line for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| Rank")}
    assert f"| {eps:.2f} " in rows["dpsgd(noise_multiplier=2)"]
    assert "| – " in rows["none"]


def test_utility_run_reports_the_epsilon_of_its_own_sample_rate_and_steps(tmp_path):
    """The ε beside an accuracy describes that training run: q = batch / train split, T = its
    steps (not the defense's configured q and T, which the attack records keep)."""
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    utility = {"steps": 7, "batch_size": 16, "lr": 0.1, "eval_size": 50}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=[{"dpsgd": {"noise_multiplier": 1.5}}],
                       attacks=[{"idlg": {"steps": 1}}], utility=utility)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = load_records(tmp_path)
    (run,) = [r for r in records if r["kind"] == "utility"]
    (attack,) = [r for r in records if r["kind"] == "attack"]
    n_train = len(DATASETS.get("digits").cls(size=8).load("train"))
    own, _ = dp_epsilon(1.5, 16 / n_train, 7, 1e-5)
    configured, _ = dp_epsilon(1.5, 0.01, 1000, 1e-5)
    assert run["metrics"]["privacy"]["epsilon"] == own
    assert run["metrics"]["privacy"]["dp_steps"] == 7
    assert attack["defense_info"]["epsilon"] == configured != own


def test_defense_table_epsilon_is_the_utility_runs_own(tmp_path):
    """With a utility track, the ε column sits beside that run's accuracy: Opacus's ε for the
    run's own sampling rate and steps, labelled as such (not the configured q, T)."""
    from bench.leaderboard import write_leaderboard
    from bench.runner import run_suite
    from helpers import make_suite

    utility = {"steps": 9, "batch_size": 16, "lr": 0.1, "eval_size": 50}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=["none", {"dpsgd": {"noise_multiplier": 1.5}}],
                       attacks=[{"idlg": {"steps": 1}}], utility=utility)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    section = write_leaderboard(tmp_path).read_text().split("## Defenses")[1]
    header = next(line for line in section.splitlines() if line.startswith("| Rank"))
    assert "| ε (utility run) " in header and "configured" not in header
    n_train = len(DATASETS.get("digits").cls(size=8).load("train"))
    own, _ = dp_epsilon(1.5, 16 / n_train, 9, 1e-5)
    configured, _ = dp_epsilon(1.5, 0.01, 1000, 1e-5)
    assert f"{own:.2f}" != f"{configured:.2f}"
    columns = [c.strip() for c in header.split("|")]
    rows = [[c.strip() for c in line.split("|")] for line in section.splitlines()
            if line.startswith("| ") and not line.startswith("| Rank")]
    by_defense = {r[columns.index("Defense")]: r for r in rows}
    assert by_defense["dpsgd(noise_multiplier=1.5)"][columns.index("ε (utility run)")] == \
        f"{own:.2f}"
    assert by_defense["none"][columns.index("ε (utility run)")] == "–"


# --- accountant failures --------------------------------------------------------------------

def test_an_accountant_that_raises_gives_no_epsilon_and_one_line_why():
    """PRV raises on settings the parameters allow (δ = 1e-300: floating point errors): the
    caller gets ε None and the reason, not an exception that would discard the cell."""
    eps, note = dp_epsilon(1.0, 1e-9, 1, 1e-300, "prv")
    assert eps is None
    assert note.startswith("accountant failed: ValueError: ") and "\n" not in note


def test_a_prv_grid_too_large_to_compute_is_not_run():
    """σ = 0.001 at q = 0.01, T = 1000 asks PRV for ~1e13 grid points (numpy's MemoryError);
    the size is estimated first and the accountant not run."""
    from defenses.dpsgd import PRV_MAX_POINTS, prv_grid_points

    assert prv_grid_points(0.001, 0.01, 1000, 1e-5) > 1e12
    assert prv_grid_points(1.0, 0.01, 1000, 1e-5) < PRV_MAX_POINTS
    eps, note = dp_epsilon(0.001, 0.01, 1000, 1e-5, "prv")
    assert eps is None and note.startswith("accountant not run: ") and "rdp" in note


def test_an_obviously_expensive_prv_accounting_is_refused_when_the_suite_loads(tmp_path):
    from helpers import run_cli, write_suite

    path = write_suite(tmp_path / "s.yaml", defenses=[
        {"dpsgd": {"noise_multiplier": 0.3, "sample_rate": 0.1, "steps": 10_000,
                   "accountant": "prv"}}])
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith(f"leakbench: error: {path}: defenses[0][0].dpsgd: the PRV accountant "
                           "would need a grid")


def test_repeated_accountant_warnings_are_counted_once_in_a_bounded_note(monkeypatch):
    """Opacus's PRV accountant can emit one numpy warning thousands of times."""
    import warnings

    from opacus.accountants import RDPAccountant

    from defenses.dpsgd import NOTE_MAX_CHARS

    def noisy(self, delta):
        for _ in range(3000):
            warnings.warn("divide by zero encountered in log", RuntimeWarning, stacklevel=1)
        warnings.warn("another " * 100, UserWarning, stacklevel=1)
        return 2.0

    monkeypatch.setattr(RDPAccountant, "get_epsilon", noisy)
    dp_epsilon.cache_clear()
    try:
        eps, note = dp_epsilon(1.0, 0.01, 17, 1e-5, "rdp")
    finally:
        dp_epsilon.cache_clear()
    assert eps == 2.0
    assert note.startswith("divide by zero encountered in log (×3000); another another")
    assert len(note) <= NOTE_MAX_CHARS and note.endswith("…")


def test_a_failing_accountant_costs_the_utility_run_its_epsilon_not_its_accuracy(tmp_path):
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    utility = {"steps": 3, "batch_size": 8, "lr": 0.05, "eval_size": 50}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=[{"dpsgd": {"accountant": "prv", "delta": 1e-300}}],
                       attacks=[{"idlg": {"steps": 1}}], utility=utility)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = load_records(tmp_path)
    (run,) = [r for r in records if r["kind"] == "utility"]
    (attack,) = [r for r in records if r["kind"] == "attack"]
    assert run["status"] == "ok", run.get("error")
    assert 0.0 <= run["metrics"]["accuracy"] <= 1.0
    assert run["metrics"]["privacy"]["epsilon"] is None
    assert run["metrics"]["privacy"]["epsilon_note"].startswith("accountant failed: ")
    assert attack["status"] != "error", attack.get("error")
    assert attack["defense_info"]["epsilon"] is None


def test_noisy_mean_divides_by_the_expected_batch_under_poisson_sampling():
    """Under Poisson sampling the DP mean is the noisy sum over the *expected* batch size (as
    Opacus does): dividing by the drawn size would make the sensitivity depend on it."""
    from defenses.dpsgd import noisy_mean

    clipped = [torch.ones(3, 2)]
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(noisy_mean(clipped, 1.0, 0.0, gen)[0], torch.ones(2))
    assert torch.equal(noisy_mean(clipped, 1.0, 0.0, gen, divisor=6)[0], torch.full((2,), 0.5))
    empty = [torch.zeros(0, 2)]
    noise_only = noisy_mean(empty, 2.0, 1.0, torch.Generator().manual_seed(1), divisor=4)[0]
    expected = torch.randn(2, generator=torch.Generator().manual_seed(1)) * 2.0 / 4
    assert torch.allclose(noise_only, expected)
    with pytest.raises(ValueError, match="expected batch size"):
        noisy_mean(empty, 1.0, 1.0, gen)


def test_poisson_batches_draw_each_item_independently_at_the_rate():
    from bench.data import poisson_batch

    data = DATASETS.get("digits").cls(size=8)
    n = len(data.load("train"))
    gen = torch.Generator().manual_seed(0)
    sizes = [len(poisson_batch(data, 16 / n, gen)[0]) for _ in range(400)]
    # mean 16, std 4 per draw: the mean of 400 draws is within 0.2 of 16 (one std); 1.5 is 7.5
    assert abs(sum(sizes) / len(sizes) - 16) < 1.5
    assert len(set(sizes)) > 5  # not a fixed-size batch
    x, y = poisson_batch(data, 1e-9, torch.Generator().manual_seed(0))
    assert x.shape == (0, *data.meta().shape) and y.shape == (0,)


def test_a_dp_utility_run_samples_as_its_accountant_assumes(tmp_path):
    """Opacus's accountant bounds Poisson-subsampled steps, so a DP-SGD training run draws its
    batches that way (empty ones included: a step of noise only); other defenses keep
    fixed-size batches."""
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    utility = {"steps": 30, "batch_size": 1, "lr": 0.1, "eval_size": 50}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=["none", {"dpsgd": {"noise_multiplier": 1.0}},
                                 {"chain": [{"mixup": {"k": 2}}, "dpsgd"]}],
                       attacks=[{"idlg": {"steps": 1}}], utility=utility)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    runs = {r["defense_label"]: r for r in load_records(tmp_path) if r["kind"] == "utility"}
    assert all(r["status"] == "ok" for r in runs.values()), {
        k: r.get("error") for k, r in runs.items()}
    assert "privacy" not in runs["none"]["metrics"]
    for label, r in runs.items():
        if label == "none":
            continue
        m = r["metrics"]["privacy"]
        assert m["dp_sampling"] == "poisson"
        # at q = 1/N a step is empty with probability (1 - 1/N)^N ≈ e^-1: some of 30 are
        assert 0 < m["dp_empty_batches"] < 30
        assert 0 < m["dp_mean_batch"] < 3


@pytest.mark.parametrize("arch, dataset", [
    ("lenet", {"digits": {"size": 16}}), ("cnn6", {"photos": {"size": 32}}),
    ({"transformer": {"width": 16, "layers": 1, "heads": 1}},
     {"pydoc": {"task": "lm", "seq_len": 8}})])
def test_an_empty_poisson_batch_is_a_step_of_noise_on_every_network(arch, dataset):
    """vmap over no sample failed inside conv, logistic and embedding layers: an empty draw
    (a step in e^-B) made the DP utility run an error record."""
    from bench.suite import utility_cells
    from defenses.dpsgd import dp_update
    from helpers import make_suite

    suite = make_suite(datasets=[dataset], archs=[arch], defenses=["dpsgd"],
                       attacks=["dlg"], utility={"steps": 1, "batch_size": 4, "lr": 0.1,
                                                 "eval_size": 10})
    cell = next(iter(utility_cells(suite)))
    data = cell.dataset.build()
    model = cell.arch.build().build_for(data.meta())
    x, y = data.load("train")[0]
    x = x.new_empty((0, *x.shape))
    y = torch.as_tensor(y)
    y = y.new_empty((0, *y.shape))
    tensors, kind, norms = dp_update(model, x, y, ClientSpec(), 1.0, 2.0,
                                     torch.Generator().manual_seed(0), expected_batch=4)
    params = [p for p in model.parameters() if p.requires_grad]
    assert kind == "gradient" and norms == []
    assert [t.shape for t in tensors] == [p.shape for p in params]
    flat = torch.cat([t.flatten() for t in tensors])
    assert 0.3 < float(flat.std()) < 0.7  # σC / B = 2 / 4: noise alone


DP = {"dpsgd": {"noise_multiplier": 1.5}}


@pytest.mark.parametrize("chain,name,why", [
    ([{"mixup": {"k": 2}}, DP], "mixup", "per-item accountant does not bound"),
    ([{"instahide": {"k": 2}}, DP], "instahide", "per-item accountant does not bound"),
    # Soteria's mask after DP-SGD comes from the raw images: which entries it zeroes tells
    # two images apart under any noise (a utility-track hunt), yet ε was reported
    ([DP, {"soteria": {"ratio": 0.5}}], "soteria", "no post-processing"),
])
def test_what_the_accountant_does_not_bound_voids_dpsgds_epsilon_in_both_tracks(
        tmp_path, chain, name, why):
    """MixUp/InstaHide draw partner images from the whole split, whether or not the step
    sampled them, so one item can sit in several clipped rows and in steps beyond its rate:
    the per-item accountant no longer bounds it. The chain had reported plain DP-SGD's ε."""
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    utility = {"steps": 3, "batch_size": 8, "lr": 0.1, "eval_size": 20}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=[{"chain": chain}, DP],
                       attacks=[{"idlg": {"steps": 1}}], utility=utility)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = load_records(tmp_path)
    for r in records:
        privacy = r["defense_info"] if r["kind"] == "attack" else r["metrics"]["privacy"]
        if "+" in r["defense_label"] or name in r["defense_label"]:
            assert privacy["epsilon"] is None and name in privacy["epsilon_note"], r["kind"]
            assert privacy["dp_noise_multiplier"] == 1.5  # the mechanism is still recorded
        else:
            assert privacy["epsilon"] > 0, r["kind"]
    assert {r["kind"] for r in records} == {"attack", "utility"} and len(records) == 4
    from bench.leaderboard import write_leaderboard

    table = write_leaderboard(tmp_path, "markdown").read_text()
    assert f"No ε for {name}" in table or f"No ε for dpsgd(noise_multiplier=1.5)+{name}" \
        in table
    assert why in table
