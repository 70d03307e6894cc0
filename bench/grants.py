"""The threat model's grants, as data: what an attacker may be handed beyond the basics.

Every attack always receives the model the client started from, the defended update, the
batch size, the input domain, the number of classes and the client's hyperparameters. A
*grant* hands it one more piece of the private side of the cell, and only when the attack
declares that it needs (``Attack.needs``) or can use (``Attack.wants``) it **and** the
suite's ``grant:`` allows it. Declaring grants as capabilities follows LeakPro's
gradient-inversion threat model (attacker capabilities checked before a run).

Adding a grant is one entry in :data:`GRANTS`: its name (the suite key), what it hands the
attacker (the README's threat-model table repeats it), and how to read it off the private
side. Attacks read it with ``obs.grant(name)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class PrivateSide:
    """What the client holds for one cell and the attacker never sees unless granted.

    ``x``/``y``: the private batch (model-input space) and its labels, before any
    data-level defense; ``update``: the client's update after every defense link, with
    everything the client knows about it (BatchNorm statistics, private metadata).
    """

    x: torch.Tensor
    y: torch.Tensor
    update: Any  # bench.contracts.Update (kept untyped here: contracts imports this module)
    dataset: Any = None  # the cell's dataset component: the public split is read off it


@dataclass(frozen=True)
class Grant:
    """One capability the threat model may grant: a name, what it hands over, how."""

    name: str  # the key in a suite's ``grant:`` and in ``Attack.needs``/``wants``
    hands: str  # what it hands the attacker, as the README's threat-model table says
    help: str  # why an attack wants it, for listings
    provide: Callable[[PrivateSide], Any]  # the granted value, read off the private side


LABELS = "labels"
BN_STATS = "bn_stats"
PUBLIC_DATA = "public_data"


def _public_split(private: PrivateSide) -> Any:
    if private.dataset is None:
        raise ValueError("the public_data grant needs the cell's dataset")
    from bench.public import public_data  # lazily: bench.public reads the dataset registry

    return public_data(private.dataset)


GRANTS: dict[str, Grant] = {g.name: g for g in (
    Grant(LABELS, "true labels of the private batch",
          "class indices, one per image (iDLG-style attacks otherwise infer them)",
          lambda private: private.y.detach().cpu().clone()),
    Grant(BN_STATS, "BatchNorm statistics of the private batch",
          "per BatchNorm layer, the (mean, variance) of the batch reaching it "
          "(GradInversion's prior, Yin et al. 2021)",
          lambda private: None if private.update.bn_stats is None else
          [(m.detach().clone(), v.detach().clone()) for m, v in private.update.bn_stats]),
    Grant(PUBLIC_DATA, "a public split of the same distribution, disjoint from every private "
          "image or sentence",
          "the dataset's held-out split minus any item also in the training split that private "
          "batches come from (bench.public): data to train a score-model prior on, or to count "
          "words in",
          _public_split),
)}
"""Every grant a suite may give, by name."""

CAPABILITIES = tuple(GRANTS)
"""Their names: what an attack may need beyond the always-granted model, update and batch."""


def provide_grants(names: frozenset[str] | set[str], private: PrivateSide) -> dict[str, Any]:
    """The granted values for ``names``, read off the private side of a cell."""
    return {name: GRANTS[name].provide(private) for name in sorted(names)}
