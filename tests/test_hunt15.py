"""Defects found by session 59's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest

from bench.suite import SuiteError, attack_cells
from helpers import make_suite


@pytest.mark.parametrize("pair", [
    (["mixup", "dpsgd"], ["dpsgd", "mixup"]),
    ([{"prune": {"ratio": 0.3}}, "mixup"], ["mixup", {"prune": {"ratio": 0.3}}]),
    (["mixup", {"secagg": {"clients": 2}}], [{"secagg": {"clients": 2}}, "mixup"]),
])
def test_two_orders_of_one_procedure_are_refused(pair: tuple[list, list]) -> None:
    """Every batch transform runs before the update wherever its link stands, so these two
    chains are one procedure; they had been two defenses with two labels and two seeds, one
    defense split over two rows of the table."""
    with pytest.raises(SuiteError, match="run the same procedure"):
        make_suite(defenses=[{"chain": pair[0]}, {"chain": pair[1]}])


def test_update_links_in_another_order_stay_two_defenses() -> None:
    """Clipping then noise is not noise then clipping: both orders stay cells of their own,
    as do one data link beside two orders of update links."""
    noise, clip = {"noise": {"scale": 0.01}}, {"clip": {"max_norm": 1.0}}
    suite = make_suite(defenses=[{"chain": [clip, noise]}, {"chain": [noise, clip]},
                                 {"chain": ["mixup", clip, noise]},
                                 {"chain": [noise, "mixup", clip]}])
    assert len({c.defense_label for c in attack_cells(suite)}) == 4
