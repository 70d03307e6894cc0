"""A cell's identity: components with validated parameters, the canonical digest, derived
seeds and display labels. Every cell kind builds its id and seeds here (benchopt's idea: one
cached result per cell, seeds from a hash of the cell's identity)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.registry import REGISTRIES, Param


@dataclass(frozen=True)
class Spec:
    """A registered component with its validated parameters."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    kind: str = ""  # "attacks" | "defenses" | "archs" | "datasets": for labels only
    shown: tuple[str, ...] = field(default=(), compare=False)  # given in the suite: labelled

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def label(self) -> str:
        """The name, with the parameters that differ from their defaults."""
        declared = self._declared()
        shown = [(k, v) for k, v in self.params
                 if k not in declared or (declared[k].identity and (
                     k in self.shown or declared[k].default != v))]
        if not shown:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={_fmt(v)}" for k, v in shown) + ")"

    def _declared(self) -> dict[str, Param]:
        if self.kind in REGISTRIES and self.name in REGISTRIES[self.kind]:
            return {p.name: p for p in REGISTRIES[self.kind].get(self.name).params}
        return {}

    def build(self) -> Any:
        """The component, constructed from its registry with these parameters."""
        return REGISTRIES[self.kind].get(self.name).cls(**self.kwargs)

    def as_dict(self) -> dict[str, Any]:
        """The identity: parameters that change results (not, e.g., a local data root)."""
        declared = self._declared()
        return {"name": self.name, "params": {k: v for k, v in self.params
                                              if k not in declared or _in_identity(declared[k], v)}}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.kwargs, "shown": list(self.shown)}

    @classmethod
    def from_json(cls, d: dict[str, Any], kind: str) -> Spec:
        return cls(d["name"], tuple(sorted(d["params"].items())), kind, tuple(d.get("shown") or ()))


def _fmt(v: Any) -> str:
    """A parameter value in a label: a float as ``:g`` writes it where that reads back as the
    same float, else in full (``:g`` keeps 6 digits: 0.0010000001 and 0.001 had one label,
    so one table row pooled them as seeds and one exclude rule matched both)."""
    if not isinstance(v, float):
        return str(v)
    short = f"{v:g}"
    return short if float(short) == v or v != v else repr(float(v))  # np.float64's repr


def chain_label(chain: tuple[Spec, ...]) -> str:
    """A defense chain's display label: its links' labels joined by ``+``."""
    return "+".join(s.label for s in chain)


def digest(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    canon = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canon.encode()).hexdigest()


def seed_from(obj: Any) -> int:
    """A 32-bit seed derived from ``obj``'s digest: the same identity, the same seed anywhere."""
    return int(digest(obj)[:8], 16)


LABEL_FIELDS = ("attack_label", "defense_label", "arch_label", "dataset_label")
"""A record's display labels (:func:`component_labels`), attack first."""


def component_labels(cell: Any) -> dict[str, str]:
    """The ``*_label`` fields of a record, for the components the cell has."""
    labels = {"defense_label": chain_label(cell.defense), "arch_label": cell.arch.label,
              "dataset_label": cell.dataset.label}
    if getattr(cell, "attack", None) is not None:
        labels["attack_label"] = cell.attack.label
    return labels


def _in_identity(param: Param, value: Any) -> bool:
    if param.identity == "non-default":
        return value != param.default
    return bool(param.identity)
