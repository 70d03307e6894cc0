"""The metric registry: one class per metric, registered with its schema by ``@register_metric``.

A metric is a class that is never instantiated (the style of Hugging Face ``evaluate`` and
ignite, minus their state): its class attributes are the schema the leaderboard, the CSV and
the success rule read, and its static ``compute`` is the definition. Built-in metrics live one
per module in :mod:`bench.metrics`; other packages add theirs through the entry-point group
``leakbench.metrics``, as for attacks and defenses (:class:`bench.registry.Registry`).

``compute`` signatures by kind and inputs:

- ``per_item`` on ``images``: ``compute(originals01, recon01) -> Tensor`` of N values, one per
  matched pair (N×C×H×W in [0,1]); a cell stores the mean, the worst and the per-image list.
- ``per_item`` on ``labels``: ``compute(true, inferred) -> float | None`` over the batch.
- ``per_item`` on ``tokens`` (text): ``compute(originals, recons) -> Tensor`` of N values, one
  per matched pair of token-string sequences (``[PAD]`` left out).
- ``pooled``: ``compute(originals, recons, **options) -> float | None`` over the concatenated
  images of a group of cells (FID/KID need many images; one cell has too few).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from bench.registry import LeakbenchError, Registry, doc_summary

MODALITIES = ("image", "text")
KINDS = ("per_item", "pooled")
INPUTS = ("images", "labels", "tokens")

METRICS = Registry("metric", ("bench.metrics",), "leakbench.metrics")


class Metric:
    """Schema of one metric; a subclass sets every field and ``compute``."""

    name: ClassVar[str]  # key in records and frames (``psnr`` → metrics["psnr"])
    label: ClassVar[str]  # table header, e.g. "PSNR"
    unit: ClassVar[str] = ""  # shown after the label in headers: "PSNR (dB)"
    modality: ClassVar[str]  # "image" (or "text")
    higher_is_better: ClassVar[bool]
    kind: ClassVar[str]  # "per_item" or "pooled"
    digits: ClassVar[int]  # decimals shown in tables
    order: ClassVar[int]  # position in records and tables (lower first)
    inputs: ClassVar[str] = "images"  # per_item: matched image pairs, or the batch's labels
    best: ClassVar[float | None] = None  # the value on identical inputs, where there is one
    worst: ClassVar[float | None] = None  # the far end of its range, where it is bounded
    no_floor_value: ClassVar[float | None] = None  # a failed seed's value: no floor is scored
    needs_weights: ClassVar[bool] = False  # a local weights file; n/a without it
    leaderboard: ClassVar[bool] = True  # a column of the attack tables
    # each value a share of trials in [0, 1] (labels right, 0/1 exact): rows take Wilson's
    # interval, since a t-interval of all-0 or all-1 seeds is a point ("± 0", "separated")
    share: ClassVar[bool] = False
    compute: ClassVar[Callable[..., Any]]

    @classmethod
    def header(cls) -> str:
        """The table header: label and unit."""
        return f"{cls.label} ({cls.unit})" if cls.unit else cls.label

    @classmethod
    def bounds(cls) -> tuple[float, float]:
        """The values the metric can take: from ``worst`` to ``best``, open-ended on the worse
        side when ``worst`` is not set (LPIPS: [0, inf)); a record outside them is damaged."""
        worse = -math.inf if cls.higher_is_better else math.inf
        ends = [worse if cls.worst is None else cls.worst,
                -worse if cls.best is None else cls.best]
        low, high = sorted(ends)
        return low, high

    @classmethod
    def format(cls, value: Any) -> str:
        """``value`` with the metric's decimals, or "n/a"."""
        return format_value(value, cls.digits)

    @classmethod
    def description(cls) -> str:
        return doc_summary(cls.__doc__)


def format_value(value: Any, digits: int) -> str:
    """A table cell: fixed decimals, "n/a" for a missing value (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return fixed(value, digits)


def fixed(value: float, digits: int) -> str:
    """``value`` with ``digits`` decimals, a negative value that rounds to zero shown as 0
    (an SSIM mean of −5e-6 read "-0.000"; Python 3.10 has no ``z`` format option)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and not text.strip("-0.") else text


def signed(value: float, digits: int) -> str:
    """A change: ``+0.12``, ``-0.12``; ``+0.00`` where it rounds to zero (never ``-0.00``)."""
    text = fixed(value, digits)
    return text if text.startswith("-") else f"+{text}"


M = TypeVar("M", bound=type[Metric])


def register_metric(cls: M) -> M:
    """Class decorator: check the schema of ``cls`` and register it under ``cls.name``."""
    where = f"metric {getattr(cls, 'name', cls.__qualname__)!r}"
    for attr in ("name", "label", "modality", "higher_is_better", "kind", "digits", "order",
                 "compute"):
        if not hasattr(cls, attr):
            raise TypeError(f"{where}: missing {attr}")
    checks = [
        (isinstance(cls.name, str) and cls.name.isidentifier(), "name is not an identifier"),
        (cls.modality in MODALITIES, f"modality not in {MODALITIES}"),
        (cls.kind in KINDS, f"kind not in {KINDS}"),
        (cls.inputs in INPUTS, f"inputs not in {INPUTS}"),
        (isinstance(cls.higher_is_better, bool), "higher_is_better is not a bool"),
        (isinstance(cls.share, bool) and (not cls.share or (cls.best, cls.worst) == (1, 0)),
         "share must be a bool, and a share's best 1 and worst 0"),
        (isinstance(cls.digits, int) and cls.digits >= 0, "digits is not an int ≥ 0"),
        (isinstance(cls.order, int), "order is not an int"),
        (callable(cls.compute), "compute is not callable"),
        (all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)
                           and math.isfinite(v)) for v in (cls.best, cls.worst)),
         "best and worst must be finite numbers or None"),
        (not all(isinstance(v, (int, float)) for v in (cls.best, cls.worst))  # (above)
         or (cls.best != cls.worst and (cls.best > cls.worst) == cls.higher_is_better),
         "best and worst contradict higher_is_better (or are equal)"),
        (cls.no_floor_value is None or (cls.worst is not None
                                        and cls.no_floor_value == cls.worst),
         "no_floor_value must be None or the metric's worst"),
        (bool((cls.__doc__ or "").strip()), "no docstring (say the paper and definition)"),
    ]
    for ok, problem in checks:
        if not ok:
            raise TypeError(f"{where}: {problem}")
    return METRICS.register(cls.name)(cls)


def list_metrics(modality: str | None = None, kind: str | None = None) -> list[type[Metric]]:
    """Registered metrics, optionally of one modality and kind, in their ``order``."""
    found = [e.cls for e in METRICS.entries()
             if (modality is None or e.cls.modality == modality)
             and (kind is None or e.cls.kind == kind)]
    return sorted(found, key=lambda m: (m.order, m.name))


def get_metric(name: str) -> type[Metric]:
    """The metric registered as ``name`` (UnknownComponentError with a suggestion otherwise)."""
    return METRICS.get(name).cls


def is_share(name: str) -> bool:
    """Whether ``name`` is a registered metric of shares (:attr:`Metric.share`): columns such
    as a summary's ``accuracy`` or a claim's ``success`` are not metrics and are not."""
    return name in METRICS and get_metric(name).share


def resolve_per_item(names: list[str], command: str = "diff") -> list[type[Metric]]:
    """The registered per-item metrics ``--metric`` names; ``a,b`` and repeats allowed
    (``command``: the one that compares them, for the message; ``diff`` and ``rerun``)."""
    per_item = ", ".join(x.name for x in list_metrics(kind="per_item"))
    for item in names:  # "psnr,,ssim" or "psnr,": a name left out, as --where refuses it
        pieces = [n.strip() for n in item.split(",")]
        if any(pieces) and not all(pieces):  # (no name at all: "expected a metric name")
            raise LeakbenchError(f"--metric {item.strip()!r}: an empty name between commas; "
                                 "drop the stray comma or finish the name")
    wanted = [n.strip() for item in names for n in item.split(",") if n.strip()]
    if not wanted:
        raise LeakbenchError(f"--metric: expected a metric name, one of {per_item}")
    out: list[type[Metric]] = []
    for name in dict.fromkeys(wanted):
        try:
            m = get_metric(name)
        except LeakbenchError as e:  # its did-you-mean, and the choices, as --value gives
            raise LeakbenchError(f"--metric: {e}; expected one of {per_item}") from None
        if m.kind != "per_item":
            raise LeakbenchError(f"--metric {name}: a pooled metric has no per-row interval; "
                                 f"{command} compares the per-item metrics ({per_item})")
        out.append(m)
    return out


DEFAULT_AT_LEAST = 20.0


@dataclass(frozen=True)
class SuccessRule:
    """When an attack succeeds on a cell: the cell's mean ``metric`` reaches a threshold.

    The bound follows the metric's direction: ``at_least`` for a higher-is-better metric
    (the default, PSNR ≥ 20 dB, the usual "recognisable reconstruction" line of the
    gradient-inversion literature), ``at_most`` for a lower-is-better one
    (``SuccessRule("mse", at_most=0.01)``; giving ``at_most`` drops the default ``at_least``).
    A bound against the metric's direction is an error, so no rule can reward a worse value.
    A missing value (n/a) never succeeds.
    """

    metric: str = "psnr"
    at_least: float | None = DEFAULT_AT_LEAST
    at_most: float | None = None

    def __post_init__(self) -> None:
        m = get_metric(self.metric)
        if self.at_most is not None:
            if self.at_least not in (None, DEFAULT_AT_LEAST):
                raise ValueError("a success rule takes at_least or at_most, not both")
            object.__setattr__(self, "at_least", None)
        if m.higher_is_better and self.at_least is None:
            raise ValueError(f"{m.name} is higher-is-better: give the rule at_least")
        if not m.higher_is_better and self.at_most is None:
            raise ValueError(f"{m.name} is lower-is-better: give the rule at_most")

    @property
    def threshold(self) -> float:
        return self.at_least if self.at_least is not None else self.at_most  # type: ignore

    def holds(self, value: float | None) -> bool:
        """Whether ``value`` (the cell's mean of ``metric``) meets the rule."""
        if value is None or math.isnan(value):
            return False
        if self.at_least is not None:
            return bool(value >= self.at_least)
        return bool(value <= self.at_most)  # type: ignore[operator]
