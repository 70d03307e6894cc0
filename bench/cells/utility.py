"""The utility track: what a defense costs the model.

For each defense × arch × dataset × seed of a suite with a ``utility:`` key, train the victim
from its initialisation for N steps of federated SGD with *defended* updates, then report test
accuracy (a language model's: next-token accuracy over the positions whose target is not
padding), next to the undefended run under the same seeds (the leaderboard pairs them), and the
mean cosine similarity between the defended and the clean update (over the steps where it is
finite: an update with an inf or NaN entry has none; None if no step has one). BatchNorm
running statistics follow the batch the client trained on (FedAvg clients send their buffers
with their weights); defenses act on the weights' update. A defense with a privacy accountant
(DP-SGD) trains on Poisson-sampled batches, the sampling its ε assumes, so its batches are
not the fixed-size ones of its `none` pair; an empty draw has no clean update and no cosine.
These are records too:
resumable, in the same store, keyed by their own stable id.
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import torch

from bench.cells.base import (
    CELL_FAILURES,
    RunOptions,
    dataset_meta,
    failure_text,
    fix_float_mode,
    register_cell_kind,
)
from bench.client import compute_update, has_batchnorm
from bench.contracts import CellContext, ClientSpec, Defense, DefenseContext, Update
from bench.data import input_centre, other_batches, poisson_batch, sample_batch, stack_items
from bench.defend import defend, voided_privacy
from bench.domains import TokenDomain, domain_of
from bench.identity import Spec, chain_label, digest, seed_from
from bench.json_values import jsonable
from bench.records import Outcome, UtilityRecord, new_record
from bench.victim import victim_model


@register_cell_kind("utility")
@dataclass(frozen=True)
class UtilityCell:
    """Train one (defense, arch, dataset, seed) victim with defended updates."""

    suite: str
    defense: tuple[Spec, ...]
    arch: Spec
    dataset: Spec
    seed: int
    base_seed: int
    config: tuple[tuple[str, Any], ...]
    skip_reason: str | None = None

    @property
    def defense_label(self) -> str:
        return chain_label(self.defense)

    def identity(self) -> dict[str, Any]:
        return {"kind": "utility", "defense": [d.as_dict() for d in self.defense],
                "arch": self.arch.as_dict(), "dataset": self.dataset.as_dict(),
                "seed": self.seed, "base_seed": self.base_seed, "utility": dict(self.config)}

    @property
    def cell_id(self) -> str:
        return "u" + digest(self.identity())[:15]

    def describe(self) -> str:
        """One line for listings (``run --dry-run``)."""
        settings = ",".join(f"{k}={v}" for k, v in self.config)
        return (f"{self.dataset.label} {self.arch.label} seed={self.seed} {self.defense_label} "
                f"utility({settings})")

    def derived_seeds(self) -> dict[str, int]:
        """Model init and data order are shared by every defense; the defense has its own."""
        ident = self.identity()
        shared = {k: ident[k] for k in ("arch", "dataset", "seed", "base_seed", "utility")}
        return {"scenario": seed_from(shared), "defense": seed_from(ident)}

    def context(self) -> CellContext:
        """The client trains with the track's batch size, FedSGD, and no grants."""
        meta = dataset_meta(self.dataset)
        return CellContext(self.arch.name, self.arch.kwargs, self.dataset.name, meta.shape,
                           meta.num_classes, dict(self.config)["batch_size"], ClientSpec(),
                           frozenset(), meta=meta)

    def with_skip(self, reason: str | None) -> UtilityCell:
        return replace(self, skip_reason=reason)

    def run(self, device: torch.device, options: RunOptions) -> Outcome:
        return Outcome(run_utility(self, device))

    def to_json(self) -> dict[str, Any]:
        return {"kind": "utility", "suite": self.suite,
                "defense": [d.as_json() for d in self.defense], "arch": self.arch.as_json(),
                "dataset": self.dataset.as_json(), "seed": self.seed,
                "base_seed": self.base_seed, "utility": dict(self.config),
                "skip_reason": self.skip_reason}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UtilityCell:
        return cls(d["suite"], tuple(Spec.from_json(s, "defenses") for s in d["defense"]),
                   Spec.from_json(d["arch"], "archs"), Spec.from_json(d["dataset"], "datasets"),
                   d["seed"], d["base_seed"], tuple(sorted(d["utility"].items())),
                   d.get("skip_reason"))


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


SMALL_NORM = 1e-6  # below it, float32 norms lose the cosine (update_cosine)


def update_cosine(defended: torch.Tensor, clean: torch.Tensor) -> float | None:
    """Cosine similarity of two flat updates, None where either has an inf or NaN entry.

    Where float32's norm of either overflows (a noise scale near 1e30) or falls below 1e-6
    while the update is not zero (``cosine_similarity`` clamps each norm at its ``eps``, 1e-12:
    a 1e-14 scale read 0.70), both are taken in float64 divided by their largest magnitude
    first (the cosine does not change with scale); elsewhere the float32 value is kept as it
    was computed before this guard, so records stay comparable across versions.
    """
    if not (torch.isfinite(defended).all() and torch.isfinite(clean).all()):
        return None
    norms = [float(v.norm()) for v in (defended, clean)]
    if any(not math.isfinite(n) or (n < SMALL_NORM and bool(v.any()))
           for n, v in zip(norms, (defended, clean))):
        defended, clean = (v.double() / v.abs().amax() if v.any() else v.double()
                           for v in (defended, clean))
    cos = float(torch.nn.functional.cosine_similarity(defended, clean, dim=0, eps=1e-12))
    return max(-1.0, min(1.0, cos))


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 256,
             pad_id: int | None = None) -> tuple[float, int]:
    """Test accuracy and the number of predictions it is over.

    One prediction per sample for a classifier (single-logit models predict the label's
    parity); a language model (logits B×L×V, labels B×L) makes one per position, and those
    whose target is ``pad_id`` are not scored: predicting the padding after a sentence's end
    is no skill, and counting it would let a short corpus flatter any model. Accuracy is the
    share of correct predictions among the scored ones.
    """
    model.eval()
    correct = scored = 0
    for i in range(0, len(x), chunk):
        logits, target = model(x[i:i + chunk]), y[i:i + chunk]
        if logits.dim() == 3:  # next-token prediction: a label per position
            keep = torch.ones_like(target, dtype=torch.bool) if pad_id is None \
                else target != pad_id
            correct += int(((logits.argmax(-1) == target) & keep).sum())
            scored += int(keep.sum())
        elif logits.shape[-1] == 1:
            pred_even = logits[:, 0] > 0
            correct += int((pred_even == (target % 2 == 0)).sum())
            scored += len(target)
        else:
            correct += int((logits.argmax(-1) == target).sum())
            scored += len(target)
    if scored == 0:
        raise ValueError("the evaluation items have no position to score (all padding)")
    return correct / scored, scored


def run_privacy(chain: list[Any], sample_rate: float, steps: int) -> dict[str, Any] | None:
    """The privacy guarantee of the first link that reports one for this run's q and T; a
    link whose accounting raises reports ε None with the reason."""
    for d in chain:
        try:
            info = d.privacy_of_training(sample_rate, steps)
        except Exception as e:
            reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
            return {"epsilon": None, "epsilon_note": f"accountant failed: {reason}"}
        if info:  # a plug-in's numpy ε is a number, as in attack records
            return jsonable(voided_privacy(info, chain))
    return None


def _chance(model: torch.nn.Module, x: torch.Tensor) -> float:
    """The accuracy of guessing, as :func:`accuracy` scores the model: 1/outputs, and 1/2
    for a one-logit model scored on the label's parity (CNN6, FCN3: 1/10 had been recorded,
    and a diverged run counted at it)."""
    training = model.training
    model.eval()  # one item through BatchNorm in train mode would raise
    try:
        with torch.no_grad():
            outputs = model(x[:1]).shape[-1]
    finally:
        model.train(training)
    return 0.5 if outputs == 1 else 1.0 / outputs


class LikeClientsSum(Defense):
    """Secure aggregation's raw sum (``reduce: sum``) in the utility track: K clients like the
    private one, so K times its update, which the server divides by K before it applies it.
    Only the links made inside the protocol after it (``noise``) see the difference: they
    act on the sum, so their std on the applied step is s/K, as in the attack track."""

    level = "protocol"
    registry_name = "secagg"

    def __init__(self, clients: int) -> None:
        super().__init__()
        self.clients = clients

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        return Update([t * self.clients for t in update.tensors], update.kind,
                      update.bn_stats, {**update.info, "aggregate_of": self.clients})


def training_links(chain: list[Defense]) -> list[Defense]:
    """The links of ``chain`` that act in training. Protocol-level links (secure aggregation)
    change what the server observes, not what trains the model: the aggregate of the same
    clients trains it as plain aggregation would, so they cost nothing here (training on K
    clients' data would flatter them); a raw sum stays a sum (:class:`LikeClientsSum`)."""
    links: list[Defense] = []
    for k, d in enumerate(chain):
        if d.level != "protocol":
            links.append(d)
        elif getattr(d, "reduce", "mean") == "sum" and getattr(d, "clients", 1) > 1 \
                and k + 1 < len(chain):  # alone, the sum and its division are the identity
            links.append(LikeClientsSum(d.clients))  # (in float32 only up to rounding)
    return links


def run_utility(cell: UtilityCell, device: torch.device) -> UtilityRecord:
    """Train with defended updates and return the utility record; never raises."""
    if cell.skip_reason:
        return new_record(cell, device, "skipped", cell.skip_reason)
    cfg = dict(cell.config)
    fields: dict[str, Any] = {}
    t0 = time.perf_counter()
    fix_float_mode()
    try:
        seeds = cell.derived_seeds()
        dataset = cell.dataset.build()
        meta = dataset_meta(cell.dataset, dataset)
        domain = domain_of(meta)  # pixels are normalised, token ids pass through
        model = victim_model(cell.arch.build(), dataset, meta, "init",
                             seeds["scenario"]).to(device)
        chain = [d.build() for d in cell.defense]
        defenses = training_links(chain)
        protocol = [d.registry_name for d in chain if d.level == "protocol"]
        data_gen = torch.Generator().manual_seed(seeds["scenario"])
        defense_gen = torch.Generator().manual_seed(seeds["defense"])
        client = ClientSpec()
        others = other_batches(dataset, meta, device, seeds["defense"])
        centre = input_centre(meta, torch.zeros((), device=device))
        has_bn = has_batchnorm(model)
        # the ε of this very run (its own q and T), beside its accuracy; a defense with an
        # accountant trains on the batches it assumes: Poisson-sampled at q (Abadi et al.)
        train_size = len(dataset.load("train"))
        if cfg["batch_size"] > train_size:  # no batch of distinct items; DP-SGD's q above 1
            raise ValueError(f"utility.batch_size {cfg['batch_size']} is above the train "
                             f"split's {train_size} items")
        sample_rate = cfg["batch_size"] / train_size
        privacy = run_privacy(chain, sample_rate, cfg["steps"])
        poisson = privacy is not None
        cosines: list[float | None] = []
        sizes: list[int] = []
        diverged_at = None
        for step in range(cfg["steps"]):
            x01, y = poisson_batch(dataset, sample_rate, data_gen, meta) if poisson \
                else sample_batch(dataset, cfg["batch_size"], data_gen, meta=meta)
            x, y = domain.encode(x01).to(device), y.to(device)
            sizes.append(len(x))
            ctx = DefenseContext(model, x, y, client, defense_gen, meta.num_classes, others,
                                 centre=centre,
                                 expected_batch=cfg["batch_size"] if poisson else None)
            clean = compute_update(model, x, y, client) if len(x) else \
                Update([torch.zeros_like(p) for p in model.parameters() if p.requires_grad],
                       "gradient", None, {})

            def compute(xb: torch.Tensor, yb: torch.Tensor, x=x, y=y, clean=clean) -> Update:
                mixed = xb is not x or yb is not y  # a data-level link changed the batch
                return compute_update(model, xb, yb, client) if mixed else clean

            update = defend(defenses, ctx, compute)
            scale = 1.0 / float(update.info.get("aggregate_of", 1))  # secure aggregation: a sum
            if len(x):  # an empty batch has no clean update to compare with
                cosines.append(update_cosine(_flat(update.tensors) * scale,
                                             _flat(clean.tensors)))
            with torch.no_grad():
                model.train()
                if has_bn and len(ctx.x):  # BatchNorm's running statistics are buffers: a
                    model(ctx.x)  # FedAvg client sends them, taken from the batch it trained on
                params = [p for p in model.parameters() if p.requires_grad]
                for p, u in zip(params, update.tensors):
                    p -= cfg["lr"] * scale * u.to(p.device)
            if not all(torch.isfinite(p).all() for p in model.parameters()):
                diverged_at = step + 1
                break
        # the model's outputs, not the dataset's classes: a one-logit model is scored on
        # parity (an empty last Poisson draw had been given 1/classes); the empty batch keeps
        # an item's shape and dtype
        chance = _chance(model, x if len(x) else x.new_zeros((1, *x.shape[1:])))
        if protocol:
            fields["utility_note"] = (f"{', '.join(protocol)}: protocol level, not applied in "
                                      "training (no utility cost by construction)")
        finite = [c for c in cosines if c is not None]
        metrics: dict[str, Any] = {"update_cosine": sum(finite) / len(finite) if finite else None,
                                   "chance": chance}
        if len(finite) < len(cosines):  # left out of the mean, counted
            metrics["nonfinite_cosine_steps"] = len(cosines) - len(finite)
        if diverged_at is not None:  # a model with non-finite weights predicts nothing
            metrics.update(accuracy=chance, eval_size=0, diverged_at_step=diverged_at)
            fields.update(status="diverged", error=f"training diverged (non-finite weights) at "
                          f"step {diverged_at}: scored at chance accuracy")
        else:
            test = dataset.load("test")
            n = min(cfg["eval_size"], len(test))
            # evenly spread over the split: test splits are often ordered by class
            picks = torch.linspace(0, len(test) - 1, n).round().long().unique()
            xt01, yt = stack_items(test, picks, meta)
            xt, yt = domain.encode(xt01).to(device), yt.to(device)
            pad = domain.pad_id if isinstance(domain, TokenDomain) else None
            acc, scored = accuracy(model, xt, yt, pad_id=pad)
            metrics.update(accuracy=acc, eval_size=len(picks))
            if scored != len(picks):  # a language model: scored positions, padding left out
                metrics["eval_positions"] = scored
            fields.update(status="ok", error=None)
        if privacy:  # with how this run drew its batches, beside the guarantee that assumes it
            metrics["privacy"] = {**privacy, "dp_sampling": "poisson",
                                  "dp_mean_batch": sum(sizes) / max(1, len(sizes)),
                                  "dp_empty_batches": sizes.count(0)}
        fields["metrics"] = metrics
    except CELL_FAILURES as e:  # a failing cell becomes a record
        fields.update(status="error", error=failure_text(e), metrics=None,
                      traceback=traceback.format_exc(limit=8))
    fields["timing"] = {"train_seconds": time.perf_counter() - t0}
    status, error = fields.pop("status"), fields.pop("error")
    return new_record(cell, device, status, error, **fields)


