"""The suite's success rule: any registered per-item metric, with the ``success_psnr``
shorthand still accepted."""

from __future__ import annotations

import pytest

from bench.metrics import SuccessRule
from bench.suite import SuiteError
from helpers import make_suite


def test_success_psnr_is_shorthand_for_a_psnr_rule():
    assert make_suite(success_psnr=25).success == SuccessRule("psnr", 25.0)
    assert make_suite().success == SuccessRule("psnr", 20.0)


def test_success_rule_on_another_metric():
    rule = make_suite(success={"metric": "mse", "at_most": 0.01}).success
    assert rule.metric == "mse" and rule.holds(0.005) and not rule.holds(0.02)


@pytest.mark.parametrize("bad, words", [
    ({"metric": "psnr", "at_most": 3}, "higher-is-better"),
    ({"metric": "nope", "at_least": 1}, "nope"),
    ({"metric": "fid", "at_most": 1}, "pooled"),
    ({"metric": "lpips", "at_most": 0.2}, "weights file"),  # every cell errored in score()
    ("psnr", "mapping"),
    ({"metric": "psnr", "at_least": 20, "bogus": 1}, "bogus"),
    # the default 20 was PSNR's: SSIM ≥ 20 made every cell a failure, silently
    ({"metric": "ssim"}, "give ssim's bound (at_least"),
    ({"metric": "label_acc"}, "give label_acc's bound"),
    ({"metric": "ssim", "at_least": 5}, "success.at_least: 5 is not a bound some cells meet"),
    ({"metric": "psnr", "at_least": 1000}, "psnr takes values in [0, 100]"),
    ({"metric": "mse", "at_most": -1}, "success.at_most: -1 is not a bound"),
    # at the metric's worst value every cell succeeds
    ({"metric": "ssim", "at_least": -1}, "give one above -1"),
    ({"metric": "mse", "at_most": 1}, "give one below 1"),
])
def test_bad_success_rules_name_the_key(bad, words):
    with pytest.raises(SuiteError, match="success") as e:
        make_suite(success=bad)
    assert words in str(e.value) and "success: success" not in str(e.value)


def test_a_success_psnr_outside_psnr_s_range_is_refused():
    for bad in (1000, 0):  # no cell meets 1000 dB, every cell meets 0 dB
        with pytest.raises(SuiteError, match=f"success_psnr: {bad} is not a bound"):
            make_suite(success_psnr=bad)
    assert make_suite(success={"metric": "ssim", "at_least": 0.5}).success.threshold == 0.5


def test_numbers_yaml_reads_as_text_are_read_as_numbers_at_the_top_level():
    """``timeout: 1e3`` was refused ("expected int or float, got '1e3'") where a component's
    ``lr: 1e-1`` was accepted: YAML 1.1 reads both as strings."""
    import yaml

    from bench.suite import parse_suite
    from helpers import TINY_SUITE

    raw = yaml.safe_load("timeout: 1e3\nsuccess_psnr: 2e1\n")
    assert raw == {"timeout": "1e3", "success_psnr": "2e1"}
    suite = parse_suite({"name": "t", **TINY_SUITE, **raw})
    assert suite.timeout == 1000.0 and suite.success == SuccessRule("psnr", 20.0)
    for bad in ("soon", "nan", "inf"):
        with pytest.raises(SuiteError, match="timeout"):
            parse_suite({"name": "t", **TINY_SUITE, "timeout": bad})


def test_success_and_success_psnr_together_are_refused():
    with pytest.raises(SuiteError, match="both"):
        make_suite(success={"metric": "psnr", "at_least": 20}, success_psnr=20)


def test_the_leaderboard_states_a_rule_on_another_metric(tmp_path):
    """It said "mean PSNR reaches n/a dB" for a rule on SSIM."""
    from bench.leaderboard import write_leaderboard
    from bench.runner import run_suite

    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 8}}],
                       attacks=[{"dlg": {"steps": 1}}],
                       success={"metric": "ssim", "at_least": 0.5})
    run_suite(suite, tmp_path, jobs=0, progress=False)
    page = write_leaderboard(tmp_path).read_text()
    assert "A run succeeds when its mean SSIM reaches 0.5;" in page and "n/a dB" not in page
    mse = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 8}}],
                     attacks=[{"dlg": {"steps": 2}}], success={"metric": "mse", "at_most": 0.01})
    run_suite(mse, tmp_path, jobs=0, progress=False)
    page = write_leaderboard(tmp_path).read_text()
    assert "A run succeeds when its mean MSE is at most 0.01 or SSIM reaches 0.5;" in page
