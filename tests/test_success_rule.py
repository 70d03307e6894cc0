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
])
def test_bad_success_rules_name_the_key(bad, words):
    with pytest.raises(SuiteError, match="success") as e:
        make_suite(success=bad)
    assert words in str(e.value)


def test_success_and_success_psnr_together_are_refused():
    with pytest.raises(SuiteError, match="both"):
        make_suite(success={"metric": "psnr", "at_least": 20}, success_psnr=20)
