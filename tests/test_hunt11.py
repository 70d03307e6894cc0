"""What session 53's hunts found in the command line's defaults and the learned-prior track:
each was a silent wrong result or a failure after minutes of work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from helpers import ROOT, one_line


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The command's exit status and its stderr, run in this process."""
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture
def no_sampling(monkeypatch):
    """prior-curve's work replaced by a note of where it would have written."""
    import bench.prior_curve

    seen: dict = {}

    def ran(dataset, params, out, samples, *args, **kwargs):
        seen.update(dataset=dataset, params=params, out=out, samples=samples)
        return []

    monkeypatch.setattr(bench.prior_curve, "run_curve", ran)
    return seen


def test_prior_curve_writes_by_default_where_the_committed_curve_lives(capsys, monkeypatch,
                                                                      tmp_path, no_sampling):
    # the default had been results/prior: samplers.{json,md,png} beside the prior suite's
    # records and leaderboard, never regenerating curves/digits16/
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "prior-curve")[0] == 0
    assert no_sampling["out"] == Path("results/prior/curves/digits16")
    assert (ROOT / "results" / "prior" / "curves" / "digits16" / "samplers.json").is_file()
    assert cli(capsys, "prior-curve", "--dataset", "photos", "--size", "8")[0] == 0
    assert no_sampling["out"] == Path("results/prior/curves/photos8")
    assert cli(capsys, "prior-curve", "--size", "0")[0] == 0  # the dataset's own size
    assert no_sampling["out"] == Path("results/prior/curves/digits")


def test_prior_curve_refuses_too_few_samples_for_inception_before_any_work(
        capsys, monkeypatch, inception_weights, no_sampling):
    # FID/KID in Inception's features need 10 images: with 2–9 samples the curve trained
    # its score model and ran a sampler (minutes), then failed on the first FID
    monkeypatch.setenv("LEAKBENCH_FID_WEIGHTS", str(inception_weights))
    line = one_line(capsys, "prior-curve", "--samples", "9", "--out", "/tmp/unused")
    assert line.endswith("prior-curve: --samples must be at least 10 with Inception features "
                         "(FID/KID pool 10 images or more), got 9")
    assert not no_sampling
    assert cli(capsys, "prior-curve", "--samples", "10", "--out", "/tmp/unused")[0] == 0
    assert no_sampling["samples"] == 10
