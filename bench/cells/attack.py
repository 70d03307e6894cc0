"""The attack cell: one point of the benchmark matrix (attack × defense chain × arch × dataset ×
batch size × client × victim × seed). Its path is in :mod:`bench.pipeline`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from bench import pipeline  # the module: pipeline imports this package's base
from bench.cells.base import RunOptions, dataset_meta, register_cell_kind
from bench.contracts import CellContext, ClientSpec
from bench.identity import Spec, chain_label, digest, seed_from
from bench.records import Outcome


@register_cell_kind("attack")
@dataclass(frozen=True)
class AttackCell:
    """One attack run against one defended client update."""

    suite: str
    attack: Spec
    defense: tuple[Spec, ...]  # a chain, applied in order; ("none",) for no defense
    arch: Spec
    dataset: Spec
    batch_size: int
    client: tuple[tuple[str, Any], ...]
    victim: str
    seed: int  # repetition index
    base_seed: int
    granted: frozenset[str] = frozenset()
    budget: tuple[tuple[str, Any], ...] = ()
    skip_reason: str | None = None

    @property
    def client_spec(self) -> ClientSpec:
        return ClientSpec(**dict(self.client))

    @property
    def defense_label(self) -> str:
        return chain_label(self.defense)

    def identity(self) -> dict[str, Any]:
        """The canonical configuration: everything that can change the cell's result."""
        return {
            "attack": self.attack.as_dict(),
            "defense": [d.as_dict() for d in self.defense],
            "arch": self.arch.as_dict(),
            "dataset": self.dataset.as_dict(),
            "batch_size": self.batch_size,
            "client": dict(self.client),
            "victim": self.victim,
            "seed": self.seed,
            "base_seed": self.base_seed,
            "granted": sorted(self.granted),
            "budget": dict(self.budget),
        }

    @property
    def cell_id(self) -> str:
        cached = self.__dict__.get("_cell_id")  # set by the expansion's fast path
        return cached if cached is not None else digest(self.identity())[:16]

    def describe(self) -> str:
        """One line for listings (``run --dry-run``)."""
        return (f"{self.dataset.label} {self.arch.label} bs={self.batch_size} seed={self.seed} "
                f"{self.defense_label} {self.attack.label}")

    def scenario(self) -> dict[str, Any]:
        """What fixes the private batch and the victim model: shared by attacks and defenses."""
        ident = self.identity()
        return {k: ident[k] for k in ("arch", "dataset", "batch_size", "victim", "seed",
                                      "base_seed")}

    def derived_seeds(self) -> dict[str, int]:
        """Seeds for the scenario (data, model), the defense's and the attack's randomness.

        The attack's seed leaves the defense out: an attack starts from the same dummy data
        against every defense of a scenario, so defense comparisons are paired (common random
        numbers) and differ only by what the defense did.
        """
        ident = self.identity()
        return {
            "scenario": seed_from(self.scenario()),
            "defense": seed_from({"scenario": self.scenario(), "defense": ident["defense"]}),
            "attack": seed_from({k: v for k, v in ident.items() if k != "defense"}),
        }

    def context(self) -> CellContext:
        """The client's context (batch B); the attack's is ``observed_through`` the chain."""
        meta = dataset_meta(self.dataset)
        return CellContext(self.arch.name, self.arch.kwargs, self.dataset.name, meta.shape,
                           meta.num_classes, self.batch_size, self.client_spec, self.granted,
                           self.victim, meta=meta)

    def with_skip(self, reason: str | None) -> AttackCell:
        return replace(self, skip_reason=reason)

    def to_json(self) -> dict[str, Any]:
        return {"suite": self.suite, **self.identity(), "skip_reason": self.skip_reason,
                "attack": self.attack.as_json(), "defense": [d.as_json() for d in self.defense],
                "arch": self.arch.as_json(), "dataset": self.dataset.as_json()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> AttackCell:
        return cls(d["suite"], Spec.from_json(d["attack"], "attacks"),
                   tuple(Spec.from_json(s, "defenses") for s in d["defense"]),
                   Spec.from_json(d["arch"], "archs"), Spec.from_json(d["dataset"], "datasets"),
                   d["batch_size"], tuple(sorted(d["client"].items())), d["victim"], d["seed"],
                   d["base_seed"], frozenset(d["granted"]), tuple(sorted(d["budget"].items())),
                   d.get("skip_reason"))

    def run(self, device: torch.device, options: RunOptions) -> Outcome:
        return pipeline.run_cell(self, device, options)
