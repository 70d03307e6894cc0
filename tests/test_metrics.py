"""Every registered metric: a valid schema, and per-item metrics that give their documented
best value on identical inputs and move the right way on a perturbed input.

Parametrized over ``list_metrics()``, so a new metric is checked with no test edited. Metrics
that need weights get random-initialised weights files (as in test_perceptual.py); nothing is
downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.metrics import (
    INPUTS,
    KINDS,
    MODALITIES,
    Metric,
    SuccessRule,
    get_metric,
    list_metrics,
)
from bench.perceptual import FID_ENV, LPIPS_ENV
from bench.registry import UnknownComponentError
from bench.scoring import score

METRICS = list_metrics()
PER_ITEM_IMAGE = [m for m in METRICS if m.kind == "per_item" and m.modality == "image"]


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random AlexNet in torchvision's state-dict format (what LPIPS loads)."""
    import torchvision

    torch.manual_seed(0)
    state = torchvision.models.alexnet(weights=None).features.state_dict()
    path = tmp_path_factory.mktemp("alex") / "alexnet-owt-7be5be79.pth"
    torch.save({f"features.{k}": v for k, v in state.items()}, path)
    return path


@pytest.fixture
def weights(monkeypatch, tmp_path, alexnet_weights, inception_weights) -> None:
    """Local weights for every metric that needs them, and an empty hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv(LPIPS_ENV, str(alexnet_weights))
    monkeypatch.setenv(FID_ENV, str(inception_weights))


def test_the_builtin_metrics_are_registered():
    assert {"psnr", "ssim", "mse", "label_acc", "lpips", "fid", "kid"} <= {
        m.name for m in METRICS}
    assert [m.name for m in list_metrics("image", "pooled")] == ["fid", "kid"]
    assert list_metrics("text") == [m for m in METRICS if m.modality == "text"]
    assert get_metric("psnr").header() == "PSNR (dB)"
    with pytest.raises(UnknownComponentError, match="did you mean 'psnr'"):
        get_metric("psnrr")


@pytest.mark.parametrize("metric", METRICS, ids=lambda m: m.name)
def test_schema_is_valid(metric: type[Metric]):
    assert issubclass(metric, Metric) and get_metric(metric.name) is metric
    assert metric.name.isidentifier() and metric.label
    assert metric.modality in MODALITIES and metric.kind in KINDS and metric.inputs in INPUTS
    assert isinstance(metric.higher_is_better, bool)
    assert isinstance(metric.digits, int) and metric.digits >= 0
    assert callable(metric.compute) and metric.description()
    assert metric.format(None) == "n/a" and metric.format(float("nan")) == "n/a"
    assert metric.format(1.0) == f"{1.0:.{metric.digits}f}"
    if metric.kind == "pooled":
        assert metric.inputs == "images"
    if metric.kind == "per_item":
        assert metric.best is not None, "a per-item metric documents its best value"


def _images(seed: int, n: int = 3, side: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, side // 4, side // 4, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear").double()


def _better(metric: type[Metric], a: float, b: float) -> bool:
    return a > b if metric.higher_is_better else a < b


@pytest.mark.parametrize("metric", PER_ITEM_IMAGE, ids=lambda m: m.name)
def test_per_item_metric_is_best_on_identical_inputs(metric: type[Metric], weights):
    if metric.inputs == "labels":
        true = torch.tensor([3, 1, 4, 1])
        same, wrong = metric.compute(true, true.flip(0)), metric.compute(true, true + 1)
        assert same == pytest.approx(metric.best)
        assert _better(metric, same, wrong)
        return
    x = _images(0)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1),
                                   dtype=x.dtype)).clamp(0, 1)
    same, worse = metric.compute(x, x.clone()), metric.compute(x, noisy)
    assert same.shape == worse.shape == (len(x),)
    assert same.tolist() == pytest.approx([metric.best] * len(x), abs=1e-6)
    assert all(_better(metric, float(s), float(w)) for s, w in zip(same, worse))


@pytest.mark.parametrize("metric", [m for m in METRICS if m.kind == "pooled"],
                         ids=lambda m: m.name)
def test_pooled_metric_computes_over_a_group(metric: type[Metric], weights):
    originals = [_images(s, n=4, side=32) for s in range(3)]
    recons = [(o + 0.1).clamp(0, 1) for o in originals]
    value = metric.compute(originals, recons, min_group=10, feature_layer="64")
    assert isinstance(value, float)
    assert metric.compute(originals[:1], recons[:1], min_group=10) is None  # 4 < 10 images


def test_success_rule_psnr_at_least():
    rule = SuccessRule()
    assert (rule.metric, rule.at_least, rule.at_most) == ("psnr", 20.0, None)
    assert rule.holds(20.0) and not rule.holds(19.99) and not rule.holds(None)
    x = torch.full((1, 1, 16, 16), 0.5)
    y = x + 0.09  # 20.9 dB
    assert score(x, torch.tensor([0]), y, None, 20.0)["success"]
    assert not score(x, torch.tensor([0]), y, None, success=SuccessRule("psnr", 21.0))["success"]
    assert score(x, torch.tensor([0]), y, None) == score(x, torch.tensor([0]), y, None, 20.0)
    with pytest.raises(ValueError, match="not both"):
        score(x, torch.tensor([0]), y, None, 20.0, success=SuccessRule())
    with pytest.raises(ValueError, match="higher-is-better"):
        SuccessRule("ssim", at_most=0.5)


def test_success_rule_on_a_lower_is_better_metric():
    rule = SuccessRule("mse", at_most=0.01)
    assert rule.at_least is None and rule.threshold == 0.01
    assert rule.holds(0.01) and rule.holds(0.0) and not rule.holds(0.02)
    x = torch.full((1, 1, 16, 16), 0.5)
    assert score(x, torch.tensor([0]), x + 0.05, None, success=rule)["success"]
    assert not score(x, torch.tensor([0]), x + 0.2, None, success=rule)["success"]
    with pytest.raises(ValueError, match="lower-is-better"):
        SuccessRule("mse")
    with pytest.raises(ValueError, match="not both"):
        SuccessRule("mse", at_least=1.0, at_most=0.01)
    with pytest.raises(ValueError, match="does not compute"):
        score(x, torch.tensor([0]), x, None, success=SuccessRule("lpips", at_most=0.1))


@pytest.mark.parametrize("best,worst", [(float("nan"), 0.0), (1.0, "low"), (True, None)])
def test_a_metric_with_unusable_bounds_is_refused_at_registration(best, worst) -> None:
    """Bounds decide which records are damaged: a NaN or non-number would condemn them all."""
    from bench.metrics.base import Metric, register_metric

    class Odd(Metric):
        """A metric whose bounds are not numbers."""

        name, label, modality, kind = "odd_bounds", "Odd", "image", "per_item"
        higher_is_better, digits, order = True, 2, 999
        compute = staticmethod(lambda a, b: a.sum())

    Odd.best, Odd.worst = best, worst
    with pytest.raises(TypeError, match="best and worst"):
        register_metric(Odd)


def test_bounds_run_from_worst_to_best_and_open_where_worst_is_unset() -> None:
    assert get_metric("psnr").bounds() == (0.0, 100.0)
    assert get_metric("mse").bounds() == (0.0, 1.0)
    assert get_metric("lpips").bounds() == (0.0, float("inf"))
    assert get_metric("fid").bounds() == (float("-inf"), float("inf"))
