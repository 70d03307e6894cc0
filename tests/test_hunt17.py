"""Defects found by session 61's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from attacks.gradient_matching import cosine_distance
from bench.cli import main
from bench.store import QUARANTINE, load_records, record_problem
from bench.suite import iter_cells
from helpers import make_suite, run_record

DIGITS = [{"digits": {"size": 16}}]


def _records(**axes) -> list[dict]:
    return [run_record(c) for c in iter_cells(make_suite(datasets=DIGITS, **axes))]


def test_the_cosine_distance_has_a_finite_gradient_at_an_all_zero_dummy_gradient() -> None:
    """A bias-free network's gradient at a zero input is zero; sqrt's derivative at 0 made
    the objective's gradient NaN (inf × 0) although its value was finite."""
    observed = [torch.randn(3, 4), torch.randn(5)]
    x = torch.zeros(4, requires_grad=True)
    dummy = [torch.outer(torch.ones(3), x), 2 * x.sum() * torch.ones(5)]  # zero at x = 0
    loss = cosine_distance(dummy, observed)
    (g,) = torch.autograd.grad(loss, x)
    assert float(loss.detach()) == 1.0 and bool(torch.isfinite(g).all()) and bool(g.abs().sum() > 0)
    y = torch.randn(4, requires_grad=True)  # elsewhere: the same value and gradient as before
    dummy = [torch.outer(torch.ones(3), y), 2 * y.sum() * torch.ones(5)]
    dot = sum((d * o).sum() for d, o in zip(dummy, observed))
    norms = sum((d * d).sum() for d in dummy).sqrt() * sum((o * o).sum() for o in observed).sqrt()
    assert torch.equal(cosine_distance(dummy, observed), 1 - dot / (norms + 1e-12))


@pytest.mark.parametrize("arch", ["cnn6", "fcn3"])
def test_inverting_gradients_from_zeros_runs_on_a_bias_free_network(arch: str) -> None:
    """``ig`` with ``init: zeros`` on cnn6/cnn6d/fcn3 (no biases) was recorded ``diverged``
    before its first step, by the NaN above."""
    (record,) = _records(archs=[arch], attacks=[{"ig": {"iterations": 3, "init": "zeros"}}])
    assert record["status"] == "ok", record["error"]


def test_analytic_at_min_bias_ratio_1_keeps_the_largest_row() -> None:
    """Rows *below* the fraction are ignored, so at 1 the largest row stays; ``>`` had left no
    row at all, and the cell diverged."""
    (record,) = _records(archs=["mlp"], attacks=[{"analytic": {"min_bias_ratio": 1.0}}])
    assert record["status"] == "ok", record["error"]
    assert record["attack_info"]["rows_used"] >= 1


@pytest.mark.parametrize(("attack", "arch", "says"), [
    ("analytic", "mlp", "bias gradient of the first linear layer is zero"),
    ("rgap", "fcn3", "the shared update is all zero"),
    ("rgap", "cnn6", "the shared update is all zero"),
])
def test_a_closed_form_on_an_all_zero_update_diverges_and_says_why(attack, arch, says) -> None:
    """Given a zeroed update (top-k keeping nothing, pruning everything), ``analytic`` was
    recorded as having hit NaN/inf, which it had not, and ``rgap`` as ``ok``: zero residuals
    and a reconstruction below the grey guess's PSNR, from no information."""
    records = _records(archs=[arch], attacks=[attack],
                       defenses=[{"topk": {"fraction": 0.0}}, {"prune": {"ratio": 1.0}}])
    for record in records:
        assert record["status"] == "diverged", record["metrics"]
        assert says in record["error"] and "NaN" not in record["error"], record["error"]
        assert record["attack_info"]["diverged_reason"] in record["error"]


@pytest.fixture(scope="module")
def two_records(tmp_path_factory) -> Path:
    from bench.runner import run_suite

    out = tmp_path_factory.mktemp("clean")
    run_suite(make_suite(seeds=2), out, jobs=0, device="cpu", progress=False)
    return out


@pytest.mark.parametrize(("field", "value", "says"), [
    ("kind", [], "unknown kind"),
    ("kind", {"a": 1}, "unknown kind"),
    ("success_rule", {"metric": None, "at_least": 20.0}, "success_rule"),
    ("success_rule", {"at_least": 20.0}, "success_rule"),
])
@pytest.mark.parametrize("command", ["leaderboard", "export"])
def test_a_damaged_kind_or_success_rule_is_quarantined_not_a_traceback(
        command, field, value, says, two_records: Path, tmp_path, capsys) -> None:
    """The record check itself raised on these (a list is unhashable; a rule without a
    metric name), so every command reading the folder ended in a traceback, exit 1."""
    out = tmp_path / "out"
    shutil.copytree(two_records, out)
    path = sorted((out / "records").glob("*.json"))[0]
    record = json.loads(path.read_text())
    record[field] = value
    assert says in (record_problem(record) or "")
    path.write_text(json.dumps(record))
    assert main([command, str(out)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and says in err
    assert (out / "records" / QUARANTINE / path.name).is_file()
    assert len(load_records(out)) == 1


@pytest.mark.parametrize(("args", "expected"), [
    (["table", "DIR", "--output", " "], "table: --output: expected a path, got ' '"),
    (["export", "DIR", "--output", "\t"], "export: --output: expected a path, got '\\t'"),
    (["run", "smoke", "--dry-run", "--out", "  "], "run: --out: expected a path, got '  '"),
])
def test_a_blank_output_path_is_refused(args, expected, two_records: Path, tmp_path,
                                        monkeypatch, capsys) -> None:
    """'' keeps meaning the default (standard output, DIR/cells.csv, results/<suite>); ' '
    had written a file or folder named by the blank in the working directory."""
    monkeypatch.chdir(tmp_path)
    args = [str(two_records) if a == "DIR" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(expected) and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def _analytic_cell(batch_size: int):
    return next(iter_cells(make_suite(datasets=DIGITS, archs=["mlp"], attacks=["analytic"],
                                      batch_size=batch_size)))


@pytest.mark.parametrize("batch_size", [1, 2])
@pytest.mark.parametrize("ratio", [0.0, 1e-3])
def test_analytic_on_an_infinite_bias_gradient_diverges_and_says_why(batch_size, ratio) -> None:
    """An fp16 overflow's inf in ∇b: the row guard had gone, and at ratio 0 no row was kept
    (0·inf is NaN; an IndexError), at 1e-3 only the inf row (batch 2: ``ok`` from zeros)."""
    from attacks.analytic import Analytic
    from helpers import observe_tiny

    obs, _ = observe_tiny(_analytic_cell(batch_size))
    obs.update.tensors[1][0] = float("inf")  # the first linear layer's bias
    recon = Analytic(min_bias_ratio=ratio).reconstruct(obs)
    assert recon.info["diverged"] and "not finite" in recon.info["diverged_reason"]


def test_analytic_never_divides_by_a_zero_bias_row() -> None:
    """At min_bias_ratio 0, ``>=`` kept the rows whose ∇b is 0 (0/0 candidates)."""
    from attacks.analytic import Analytic
    from helpers import observe_tiny

    obs, _ = observe_tiny(_analytic_cell(2))
    bias = obs.update.tensors[1]
    bias[::2] = 0.0
    recon = Analytic(min_bias_ratio=0.0).reconstruct(obs)
    assert recon.info["rows_used"] == int((bias != 0).sum()) < bias.numel()
    assert bool(torch.isfinite(recon.data).all())


def test_an_attack_whose_info_is_not_a_mapping_still_gets_a_record(monkeypatch) -> None:
    """Reading the attack's ``diverged_reason`` outside the scoring guard let an info of None
    escape ``run_cell`` (no record) where it had been an error record."""
    from attacks.analytic import Analytic

    real = Analytic.reconstruct

    def no_info(self, obs):
        recon = real(self, obs)
        recon.info = None
        return recon

    monkeypatch.setattr(Analytic, "reconstruct", no_info)
    record = run_record(_analytic_cell(1))
    assert record["status"] in ("error", "ok"), record
    assert record["status"] == "ok" or "score" in record["error"]


def test_a_shares_converged_mean_reads_it_into_its_bounds_as_the_headline_does() -> None:
    import pandas as pd

    from bench.leaderboard.aggregate import _mean

    assert _mean(pd.Series([1.0000005] * 3), share=True) == 1.0
    assert _mean(pd.Series([1.0000005] * 3)) == pytest.approx(1.0000005, abs=0)
