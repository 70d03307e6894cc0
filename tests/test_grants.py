"""The threat model's grants: declared once in bench/grants.py, documented in the README,
handed to an attack only when the suite grants them."""

from __future__ import annotations

import re

import pytest
import torch

from bench.cells import RunOptions
from bench.contracts import Reconstruction, Update
from bench.grants import (
    BN_STATS,
    CAPABILITIES,
    GRANTS,
    LABELS,
    PUBLIC_DATA,
    PrivateSide,
    provide_grants,
)
from bench.pipeline import observe, score_attack
from bench.suite import attack_cells
from helpers import CPU, ROOT, make_suite, observe_tiny


def threat_model_rows() -> list[str]:
    """The first cells of the rows of the README's "## Threat model" table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Threat model", 1)[1].split("\n## ", 1)[0]
    return [line.split("|")[1].strip() for line in section.splitlines()
            if line.startswith("|") and not re.match(r"\|\s*-", line)]


@pytest.mark.parametrize("name", sorted(GRANTS))
def test_readme_threat_model_lists_every_grant_with_what_it_hands(name):
    assert f"{GRANTS[name].hands} (`{name}`)" in threat_model_rows()


def test_capabilities_are_the_grants():
    assert CAPABILITIES == tuple(GRANTS) == (LABELS, BN_STATS, PUBLIC_DATA)


def test_grants_read_the_private_side():
    bn = [(torch.zeros(2), torch.ones(2))]
    y = torch.tensor([3, 1])
    private = PrivateSide(torch.zeros(2, 1, 2, 2), y, Update([torch.ones(1)], bn_stats=bn))
    granted = provide_grants({LABELS, BN_STATS}, private)
    assert torch.equal(granted[LABELS], y) and granted[LABELS] is not y
    # copies, like the labels: an attack editing them in place cannot reach the private side
    assert granted[BN_STATS] is not bn
    assert all(torch.equal(a, b) and a is not b
               for got, want in zip(granted[BN_STATS], bn) for a, b in zip(got, want))
    assert provide_grants(set(), private) == {}


def test_an_observation_carries_only_what_the_suite_grants():
    suite = make_suite(datasets=[{"digits": {"size": 12}}], archs=[{"convnet": {"width": 2}}],
                       batch_size=2, attacks=[{"gradinversion": {"iterations": 1}}],
                       grant=[BN_STATS, LABELS])
    (cell,) = attack_cells(suite)
    obs, private = observe_tiny(cell)
    assert set(obs.grants) == {BN_STATS, LABELS}  # gradinversion needs BN, wants labels
    assert torch.equal(obs.grant(LABELS), private.y)
    assert obs.update.bn_stats is None  # the shared update never carries them itself
    (cell,) = attack_cells(make_suite(datasets=[{"digits": {"size": 12}}], grant=[BN_STATS]))
    obs, _ = observe_tiny(cell)  # dlg declares no grant
    assert obs.grants == {} and obs.grant(LABELS) is None
    with pytest.raises(KeyError, match="unknown grant"):
        obs.grant("labls")


def test_granted_labels_returned_by_an_attack_are_not_credited_as_recovered():
    """An attack following the README's template hands the granted labels back: scored, they
    read label accuracy 1.00 for nothing (the built-in attacks drop them themselves)."""
    suite = make_suite(batch_size=4, grant=["labels"], attacks=["ig"])
    observed = observe(attack_cells(suite)[0], CPU)
    lo, hi = observed.obs.domain.bounds()
    grey = (lo + 0.5 * (hi - lo)).expand(4, *observed.obs.domain.shape).clone()
    metrics, _ = score_attack(observed, Reconstruction(grey, observed.obs.grant("labels")),
                              RunOptions())
    assert observed.obs.grant("labels") is not None and metrics["label_acc"] is None
    plain = observe(attack_cells(make_suite(batch_size=4, attacks=["ig"]))[0], CPU)
    inferred = plain.private.y.clone()  # recovered, not granted: credited
    metrics, _ = score_attack(plain, Reconstruction(grey, inferred), RunOptions())
    assert metrics["label_acc"] == 1.0
