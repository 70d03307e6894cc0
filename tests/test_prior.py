"""Learned priors: the public split, the score model and its cache, the samplers' exact NFE,
the Denoising-Langevin-Gibbs chain, and the dmcmc attack's grant."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from bench.data import denormalize, sample_batch
from bench.grants import PUBLIC_DATA
from bench.public import image_digest, public_data
from bench.registry import DATASETS, SAMPLERS
from bench.samplers.common import gibbs_sweep
from bench.scoremodel import CountedDenoiser, ScoreSettings, load_or_train
from bench.suite import attack_cells
from helpers import ROOT, make_suite, observe_tiny, run_record

TINY = ScoreSettings(width=8, steps=4, batch_size=8)


@pytest.mark.parametrize("name, params", [("digits", {"size": 16}), ("digits", {"size": 8})])
def test_the_public_split_shares_no_image_with_any_private_batch(name, params):
    dataset = DATASETS.get(name).cls(**params)
    public = public_data(dataset)
    assert len(public.images) > 50 and len(public.images) == len(public.labels)
    published = {image_digest(x) for x in public.images}
    train = dataset.load("train")  # every private batch (and MixUp/secagg partner) comes from it
    assert not published & {image_digest(train[i][0]) for i in range(len(train))}
    for seed in range(20):
        x, _ = sample_batch(dataset, 4, torch.Generator().manual_seed(seed))
        assert not published & {image_digest(xi) for xi in x}


def test_the_grant_hands_the_public_split_only_when_granted():
    suite = make_suite(datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA],
                       attacks=[{"dmcmc": {"sweeps": 1}}])
    (cell,) = attack_cells(suite)
    assert cell.skip_reason is None and PUBLIC_DATA in cell.granted
    obs, private = observe_tiny(cell)
    public = obs.grant(PUBLIC_DATA)
    own = denormalize(private.x.cpu(), obs.domain.mean, obs.domain.std)
    assert public.key["dataset"] == "digits" and public.images.shape[1:] == own.shape[1:]
    assert not {image_digest(x) for x in own} & {image_digest(x) for x in public.images}
    (plain,) = attack_cells(make_suite(datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA]))
    assert observe_tiny(plain)[0].grants == {}  # dlg does not use it: never handed over


def test_photos_has_no_public_split_and_dmcmc_is_skipped_there():
    """Photo crops overlap by half: every held-out crop shares pixels with training crops,
    which the exact-duplicate filter cannot see; photos gives no public split."""
    from bench.registry import LeakbenchError

    dataset = DATASETS.get("photos").cls(size=16)
    test, train = dataset.load("test"), dataset.load("train")
    train_crops = torch.stack([train[i][0] for i in range(len(train))])
    crop = test[0][0]  # its right half is the left half of the next crop in reading order
    inner = (train_crops[:, :, :, 1:7] - crop[:, :, 9:15]).abs().flatten(1).amax(1)
    assert float(inner.min()) < 1e-5  # the same pixels (resampling touches only the edges)
    with pytest.raises(LeakbenchError, match="photos has no public split"):
        public_data(dataset)
    (cell,) = attack_cells(make_suite(grant=[PUBLIC_DATA], attacks=[{"dmcmc": {"sweeps": 1}}]))
    assert cell.skip_reason.startswith("dmcmc needs public_data, and photos has none: ")


def test_without_the_grant_dmcmc_is_skipped_with_its_reason():
    (cell,) = attack_cells(make_suite(attacks=[{"dmcmc": {"sweeps": 1}}]))
    assert cell.skip_reason == "dmcmc needs public_data, which the suite does not grant"
    record = run_record(cell)
    assert record["status"] == "skipped" and "public_data" in record["error"]


def test_the_score_model_trains_once_and_is_cached(tmp_path, monkeypatch, capsys):
    public = public_data(DATASETS.get("digits").cls(size=8))
    model, hit = load_or_train(public, TINY, 0, cache=tmp_path)
    assert not hit and len(list(tmp_path.glob("*.pt"))) == 1
    assert "score model" in capsys.readouterr().err  # progress with the loss (tqdm)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again despite the cache")

    monkeypatch.setattr("bench.scoremodel.train_score", no_training)
    again, hit = load_or_train(public, TINY, 0, cache=tmp_path)
    assert hit
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(AssertionError, match="trained again"):  # another seed is another key
        load_or_train(public, TINY, 1, cache=tmp_path)


class Gaussian(torch.nn.Module):
    """The exact denoiser of data ~ N(0, s0²·I): D(x, σ) = x·s0²/(s0² + σ²)."""

    def __init__(self, s0: float = 0.5) -> None:
        super().__init__()
        self.s0 = s0
        self.evaluated = 0

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        self.evaluated += len(x)
        return x * self.s0 ** 2 / (self.s0 ** 2 + sigma.view(-1, 1, 1, 1) ** 2)


@pytest.mark.parametrize("name, params", [
    ("heun", {"steps": 5}), ("heun", {"steps": 1}),
    ("dmcmc", {"chains": 3, "burn_in": 4, "thin": 2, "denoise_steps": 2}),
    ("dmcmc", {"chains": 8, "burn_in": 0, "thin": 1, "denoise_steps": 1}),
])
def test_samplers_count_score_evaluations_exactly(name, params):
    sampler = SAMPLERS.get(name).cls(**params)
    net = Gaussian()
    denoiser = CountedDenoiser(net)
    n = 7
    out = sampler.sample(denoiser, n, (1, 4, 4), torch.Generator().manual_seed(0))
    assert out.shape == (n, 1, 4, 4) and bool(torch.isfinite(out).all())
    assert denoiser.nfe == net.evaluated == round(sampler.nfe_per_sample(n) * n)
    if name == "heun":
        assert denoiser.nfe == n * (2 * params["steps"] - 1)
    else:
        chains = min(params["chains"], n)
        sweeps = params["burn_in"] + math.ceil(n / chains) * params["thin"]
        assert denoiser.nfe == 2 * chains * sweeps + n * (2 * params["denoise_steps"] - 1)


def test_the_gibbs_step_draws_the_noise_level_of_the_image():
    gen = torch.Generator().manual_seed(0)
    s0, true = 0.5, 0.3
    x = (torch.randn(64, 1, 16, 16, generator=gen) * s0
         + torch.randn(64, 1, 16, 16, generator=gen) * true)
    d = CountedDenoiser(Gaussian(s0))
    _, sigma = gibbs_sweep(d, x, torch.full((64,), true), gen, 0.5, 1e-3, 10.0)
    assert abs(float(sigma.mean()) - true) < 0.05 * true
    assert d.nfe == 2 * 64  # the denoised estimate and the trace probe
    # the residual alone sees only E‖x − D‖²/d = σ⁴/(s0² + σ²): the trace term is what
    # makes the draw unbiased where the denoiser is unsure
    _, low = gibbs_sweep(d, x, torch.full((64,), true), gen, 0.5, 1e-3, 10.0, probe=False)
    assert float(low.mean()) < 0.7 * true


def test_a_dmcmc_chain_moves_its_noise_level_both_ways():
    sampler = SAMPLERS.get("dmcmc").cls(chains=4, burn_in=30, sigma_lo=0.01, sigma_hi=5.0)
    _, _, trace = sampler.chain(CountedDenoiser(Gaussian()), 4, (1, 8, 8),
                                torch.Generator().manual_seed(1))
    steps = torch.stack(trace).diff(dim=0)  # sweeps × chains
    assert len(trace) == 31 + 1
    assert bool((steps > 0).any(0).all()) and bool((steps < 0).any(0).all())
    assert all(0.01 <= float(s.min()) and float(s.max()) <= 5.0 for s in trace)


def test_dmcmc_reconstructs_within_its_gradient_budget(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))
    dmcmc = {"sweeps": 50, "denoise_steps": 2, "score_steps": 3, "score_width": 8}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA],
                       attacks=[{"dmcmc": dmcmc}], budget={"max_grad_evals": 7})
    (cell,) = attack_cells(suite)
    record = run_record(cell)
    assert record["status"] == "ok", record.get("error")
    assert record["grad_evals"] == 7 and record["iterations"] == 7 - 3  # 3 guided Heun evals
    info = record["attack_info"]
    assert info["nfe"] == 2 * 4 + 3  # two per sweep (estimate, trace probe), then the Heun
    assert len(list((tmp_path / "scores").glob("*.pt"))) == 1  # trained once, cached
    assert 0.02 <= min(info["chain_sigma"]) and max(info["chain_sigma"]) <= 0.3
    # a budget below the finish shortens the finish instead of overrunning the budget
    tight = make_suite(datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA],
                       attacks=[{"dmcmc": dict(dmcmc, denoise_steps=5)}],
                       budget={"max_grad_evals": 4})
    record = run_record(attack_cells(tight)[0])
    assert record["status"] == "ok", record.get("error")
    assert record["grad_evals"] <= 4


def test_fid_features_fall_back_to_a_network_trained_on_the_public_split(tmp_path, monkeypatch):
    from bench import featurenet

    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))
    monkeypatch.setitem(featurenet.TRAINING, "steps", 30)
    monkeypatch.setattr(featurenet, "fid_status", lambda weights=None: (False, "none"))
    public = public_data(DATASETS.get("digits").cls(size=8))
    train = DATASETS.get("digits").cls(size=8).load("train")
    real = torch.stack([train[i][0] for i in range(200)])
    close = featurenet.quality(real, public.images[:200], public)
    far = featurenet.quality(real, torch.rand(200, 1, 8, 8), public)
    assert close["features"].startswith(featurenet.EXTRACTOR)  # no Inception weights here
    assert close["fid"] < far["fid"] and close["kid"] < far["kid"]
    assert len(list((tmp_path / "features").glob("*.pt"))) == 1


def test_the_feature_network_barely_depends_on_the_cpus_kernels(monkeypatch):
    """Trained in float32, the network's weights after 400 steps depended on the kernels
    (threads, oneDNN, AVX2 or AVX-512) enough to move committed FIDs by 10%; in float64 the
    two runs here agree far inside the printed digits (in float32 they were 0.13 apart at
    40 steps on an AMD EPYC)."""
    from bench import featurenet

    monkeypatch.setitem(featurenet.TRAINING, "steps", 40)
    public = public_data(DATASETS.get("digits").cls(size=16))
    threads, mkldnn = torch.get_num_threads(), torch.backends.mkldnn.enabled
    try:
        torch.set_num_threads(1)
        one = featurenet._train(public, 0)["state"]
        torch.set_num_threads(2)
        torch.backends.mkldnn.enabled = not mkldnn
        two = featurenet._train(public, 0)["state"]
    finally:
        torch.set_num_threads(threads)
        torch.backends.mkldnn.enabled = mkldnn
    assert all(v.dtype == torch.float32 for v in one.values())  # what the extractor loads
    worst = max(float((one[k] - two[k]).abs().max() / one[k].abs().max().clamp_min(1e-12))
                for k in one)
    assert worst < 1e-6


def test_the_curve_says_which_features_and_counts_each_samplers_nfe(tmp_path, monkeypatch):
    from bench import featurenet
    from bench.prior_curve import run_curve

    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(featurenet.TRAINING, "steps", 10)
    monkeypatch.setattr(featurenet, "fid_status", lambda weights=None: (False, "none"))
    curve = [("heun", {"steps": 2}),
             ("dmcmc", {"chains": 4, "burn_in": 2, "thin": 1, "denoise_steps": 1})]
    records = run_curve("digits", {"size": 8}, tmp_path, samples=12, settings=TINY, curve=curve)
    assert [r["nfe_per_sample"] * 12 for r in records] == [3 * 12, 2 * 4 * (2 + 3) + 12]
    table = (tmp_path / "samplers.md").read_text()
    assert f"Features: {featurenet.EXTRACTOR}" in table and "| dmcmc chains=4" in table
    assert (tmp_path / "samplers.png").stat().st_size > 0


def test_inception_weights_that_give_no_fid_stop_the_curve_at_its_first_sampler(tmp_path,
                                                                             monkeypatch):
    """A weights file torch loads but torch-fidelity cannot use: every sampler had run, then
    the progress line raised a TypeError on FID None."""
    from bench import prior_curve
    from bench.registry import LeakbenchError

    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(prior_curve, "quality", lambda *a: {"fid": None, "reason": "bad keys"})
    with pytest.raises(LeakbenchError, match="FID/KID n/a with w.pt: bad keys"):
        prior_curve.run_curve("digits", {"size": 8}, tmp_path, samples=2, settings=TINY,
                              curve=[("heun", {"steps": 2}), ("heun", {"steps": 3})],
                              inception="w.pt")


CURVES = sorted(p.parent.name
                for p in (ROOT / "results" / "prior" / "curves").glob("*/samplers.json"))


def test_the_digits_curve_is_committed():
    assert CURVES == ["digits16"]


@pytest.mark.parametrize("curve", CURVES)
def test_the_committed_curve_regenerates_byte_identically(curve, tmp_path):
    from bench.prior_curve import write_curve

    committed = ROOT / "results" / "prior" / "curves" / curve
    shutil.copy(committed / "samplers.json", tmp_path / "samplers.json")
    write_curve(tmp_path)
    for name in ("samplers.md", "samplers.png"):
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes()
    records = json.loads((committed / "samplers.json").read_text())
    assert {r["sampler"] for r in records} == {"heun", "dmcmc"}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalize_keeps_the_batchs_device_and_dtype(dtype):
    """dmcmc normalises its chain's images on the attack's device: the dataset statistics
    must follow the batch (they were built on the CPU: a CUDA batch raised). The meta device
    stands in for an accelerator here: a CPU constant mixed into it raises the same way."""
    from bench.data import denormalize, normalize

    x = torch.zeros(2, 3, 4, 4, dtype=dtype, device="meta")
    for out in (normalize(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)),
                denormalize(x, (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))):
        assert out.device.type == "meta" and out.dtype == dtype


@pytest.mark.parametrize("width", [4, 12, 20, 8, 16])
def test_every_score_width_the_attack_accepts_builds_a_network(width):
    """``score_width`` takes 4..256; GroupNorm's 8 groups had to divide 3·width, so 4, 12
    and 20 failed when the cell ran. Multiples of 8 keep their 8 groups (cached models)."""
    from bench.scorenet import TinyUNet

    net = TinyUNet(1, width=width)
    out = net(torch.zeros(2, 1, 16, 16), torch.zeros(2))
    assert out.shape == (2, 1, 16, 16)
    groups = {m.num_groups for m in net.modules() if isinstance(m, torch.nn.GroupNorm)}
    if width % 8 == 0:
        assert groups == {8}


def test_dmcmc_without_guidance_samples_the_prior_and_spends_no_gradient(tmp_path, monkeypatch):
    """λ = 0 had evaluated (and counted) the matching gradient at every sweep and Heun
    level only to multiply it by zero, and let the gradient budget cut its sweeps."""
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))
    dmcmc = {"sweeps": 6, "denoise_steps": 2, "score_steps": 3, "score_width": 8, "lam": 0.0}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], grant=[PUBLIC_DATA],
                       attacks=[{"dmcmc": dmcmc}], budget={"max_grad_evals": 4})
    record = run_record(attack_cells(suite)[0])
    assert record["status"] == "ok", record.get("error")
    assert record["grad_evals"] == 0 and record["attack_info"]["sweeps"] == 6
    assert record["attack_info"]["nfe"] == 2 * 6 + 3 and record["attack_info"]["final_loss"] is None
