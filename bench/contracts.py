"""The data that crosses each boundary of a cell, and the component base classes.

    client update ─► Update ─► Defense ─► defended Update ─► Observation ─► Attack ─► Reconstruction

The attacker is handed an :class:`Observation` and nothing else: it never sees
the private batch, and scoring happens outside the attack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from bench.domains import InputDomain
from bench.grants import GRANTS
from bench.registry import ARCHS, Component

# The update each client mode shares: FedSGD one gradient, FedAvg the weight delta of its
# local SGD steps.
UPDATE_KINDS = {"fedsgd": "gradient", "fedavg": "delta"}

# What a defense writes in ``Update.info`` that the server sees with the update: the number of
# clients in a secure aggregate and int8 scales travel with the message. Everything else there
# (the client's loss, mixing coefficients, per-sample norms, …) stays in the record only.
PUBLIC_UPDATE_INFO = frozenset({"aggregate_of", "secagg_clients", "int8_scales"})


@dataclass
class Update:
    """What a client shares: per-parameter gradients (FedSGD) or weight deltas (FedAvg)."""

    tensors: list[torch.Tensor]
    kind: str = "gradient"  # "gradient" | "delta"
    bn_stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # e.g. epsilon reported by a defense

    def clone(self) -> Update:
        return Update(
            [t.detach().clone() for t in self.tensors],
            self.kind,
            self.bn_stats,
            dict(self.info),
        )


def shared_update(update: Update) -> Update:
    """The update as the server receives it: tensors, kind and public metadata only."""
    public = {k: v for k, v in update.info.items() if k in PUBLIC_UPDATE_INFO}
    # copies: an attack that edits its observation in place cannot reach the private side
    return Update([t.detach().clone() for t in update.tensors], update.kind, None, public)


@dataclass
class ClientSpec:
    """How the client computes its update: FedSGD (one gradient) or FedAvg (local SGD steps)."""

    mode: str = "fedsgd"  # "fedsgd" | "fedavg"
    local_epochs: int = 1
    local_batch_size: int = 0  # 0: the whole batch per step
    lr: float = 0.1
    bn_mode: str = "train"  # BatchNorm mode on the client: "train" | "eval"

    @property
    def update_kind(self) -> str | None:
        """What this client shares: "gradient" (FedSGD) or "delta" (FedAvg); None if unknown."""
        return UPDATE_KINDS.get(self.mode)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "local_epochs": self.local_epochs,
            "local_batch_size": self.local_batch_size,
            "lr": self.lr,
            "bn_mode": self.bn_mode,
        }


@dataclass
class Observation:
    """Everything the attacker is granted for one cell, and nothing more.

    On a secure aggregate (Bonawitz et al. 2017) the server knows the number of clients K
    and their batches: ``clients`` is K and ``batch_size`` the K·B samples the aggregate was
    computed on, the batch an attack reconstructs. Without aggregation K = 1.
    """

    model: nn.Module  # the architecture with the parameters the client started from
    update: Update  # the defended update
    batch_size: int  # samples in the observed update: K·B on a K-client aggregate
    domain: InputDomain  # the input space: shape and valid range (e.g. the pixel box)
    num_classes: int
    client: ClientSpec
    grants: dict[str, Any] = field(default_factory=dict)  # by name; only those granted
    device: torch.device = torch.device("cpu")
    generator: torch.Generator | None = None  # the attack's own randomness, seeded per cell
    max_iterations: int | None = None  # budget caps from the suite
    max_grad_evals: int | None = None
    clients: int = 1  # K: the clients whose updates the observed one aggregates

    @property
    def client_batch_size(self) -> int:
        """B: the samples of each client in the aggregate (``batch_size`` when K = 1)."""
        return self.batch_size // self.clients

    @property
    def aggregate_scale(self) -> float:
        """The factor from the sum of the K clients' updates to the observed one: 1/K for a
        mean, 1 for a raw sum (``aggregate_of`` travels with a sum: the server divides)."""
        return 1.0 if "aggregate_of" in self.update.info else 1.0 / self.clients

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one sample (C, H, W for images)."""
        return tuple(self.domain.shape)

    def grant(self, name: str) -> Any | None:
        """The value of grant ``name`` (see bench.grants), or None when it was not granted."""
        if name not in GRANTS:
            raise KeyError(f"unknown grant {name!r}; known: {', '.join(GRANTS)}")
        return self.grants.get(name)


@dataclass
class Reconstruction:
    """An attack's output: the batch in model-input space (``data``, batch × domain shape),
    labels if it inferred them, and its cost."""

    data: torch.Tensor
    labels: torch.Tensor | None = None
    iterations: int = 0
    grad_evals: int = 0
    loss_trace: list[float] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CellContext:
    """What is known about a cell before it runs, for compatibility checks.

    A defense checks the client's context (``batch_size`` = B, ``clients`` = 1); an attack
    checks what the server observes (:meth:`observed_through` the defense chain): on a
    K-client secure aggregate ``batch_size`` is K·B and ``clients`` K, as in its
    :class:`Observation`. ``victim`` is the model state ("init" or "trained:N").
    """

    arch: str
    arch_params: dict[str, Any]
    dataset: str
    input_shape: tuple[int, int, int]
    num_classes: int
    batch_size: int
    client: ClientSpec
    granted: frozenset[str]
    victim: str = "init"
    clients: int = 1
    meta: DatasetMeta | None = None  # the dataset's metadata (modality, vocabulary, task)

    @property
    def modality(self) -> str:
        """"image" or "text": the kind of data of the cell's dataset."""
        return self.meta.modality if self.meta is not None else "image"

    def build_model(self) -> nn.Module:

        arch = ARCHS.get(self.arch).cls(**self.arch_params)
        if self.meta is not None:
            return arch.build_for(self.meta)
        return arch.build(self.input_shape, self.num_classes)

    def observed_through(self, chain: Sequence[Defense]) -> CellContext:
        """The context as the server observes the update after ``chain``: the batch each
        link declares (:meth:`Defense.observed_batch`), and the clients it aggregates."""
        batch = observed_batch(chain, self.batch_size)
        return replace(self, batch_size=batch, clients=self.clients * batch // self.batch_size)


def modality_mismatch(component: Component, modalities: frozenset[str], modality: str
                      ) -> str | None:
    """Why ``component`` (declaring ``modalities``) cannot run on ``modality`` data, or None."""
    if modality in modalities:
        return None
    return (f"{component.registry_name} works on {' and '.join(sorted(modalities))} data only; "
            f"this cell's dataset is {modality}")


class Attack(Component):
    """Base class: reconstruct the private batch from an observation."""

    modalities: frozenset[str] = frozenset({"image"})  # the data it reconstructs

    needs: frozenset[str] = frozenset()  # grants (bench.grants) it requires; skipped without
    wants: frozenset[str] = frozenset()  # used when the suite grants them, never required
    # the updates it can invert: "gradient" (FedSGD) and/or "delta" (FedAvg, e.g. by
    # unrolling the local steps as Dimitrov et al. 2022 do)
    update_kinds: frozenset[str] = frozenset({"gradient"})
    paper: str = ""
    reference: bool = False  # reads no update (a public guess): no defense ranking uses it
    counts_iterations: bool = True  # False: no optimiser steps, so max_iterations caps none

    def skip_reason(self, ctx: CellContext) -> str | None:
        """Why this attack cannot run on the cell, or None: the update kind, then its own checks."""
        kind = ctx.client.update_kind
        if kind is None:
            return f"{self.registry_name} does not know client mode {ctx.client.mode!r}"
        if kind not in self.update_kinds:
            known = " or ".join(sorted(self.update_kinds)) or "no"
            return (f"{self.registry_name} inverts only {known} updates; a {ctx.client.mode} "
                    f"client shares a {kind} update")
        return modality_mismatch(self, self.modalities, ctx.modality) or \
            self.incompatibility(ctx)

    def incompatibility(self, ctx: CellContext) -> str | None:
        """Attack-specific reasons it cannot run on the cell (layers, batch size), or None."""
        return None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        raise NotImplementedError

    # the data modalities on which ``reconstruct_trials`` vectorises: there the runner groups
    # cells that differ only by seed into one pass (records stay one per cell); elsewhere
    # each cell is a task of its own, with its own timeout
    batched_trials: frozenset[str] = frozenset()

    def reconstruct_trials(self, observations: list[Observation]) -> list[Reconstruction]:
        """One reconstruction per observation; attacks that vectorise over trials override
        this (trials stay independent: each result depends on its own observation only)."""
        return [self.reconstruct(o) for o in observations]

    def prepare(self, dataset: Dataset, progress: bool = False) -> None:
        """Build and cache, before any cell runs, what this attack's cells on ``dataset``
        share (a learned prior): no cell's attack time or timeout then pays for it."""


class Defense(Component):
    """Base class: transform the private batch (data level) and/or the update (update level)."""

    paper: str = ""
    # "data": changes the batch the client trains on; "update": changes what it shares;
    # "protocol": changes only what the server observes (the model trains as without it)
    level: str = "update"
    recomputes_update: bool = False  # rebuilds the update from the batch (DP-SGD)
    # its update transform reads the client's batch (Soteria's feature scores): after a
    # protocol-level link it would act on an aggregate of batches it never saw
    reads_batch: bool = False
    in_aggregate: bool = False  # can run inside secure aggregation (noise: shares sum to it)
    # the data it works on: an update-level transform does not look at the data; a data-level
    # defense (MixUp) or one that reads image features (Soteria) declares {"image"}
    modalities: frozenset[str] = frozenset({"image", "text"})

    def incompatibility(self, ctx: CellContext) -> str | None:
        return None

    def privacy_of_training(self, sample_rate: float, steps: int) -> dict[str, Any] | None:
        """The privacy budget (ε at δ) of a training run of ``steps`` steps at sampling rate
        ``sample_rate`` under this defense, or None when it gives no guarantee.

        A defense that gives one makes the utility track draw Poisson batches (the sampling
        the accountants assume): its :meth:`transform_update` then sees batches of any size,
        empty ones included, and divides a mean by ``ctx.expected_batch``, not ``len(ctx.x)``."""
        return None

    def observed_batch(self, batch_size: int) -> int:
        """How many samples the update the server observes covers, for a client batch of
        ``batch_size``: unchanged, except for aggregation (secure aggregation: K·B)."""
        return batch_size

    def extra_items(self, batch_size: int) -> int:
        """The distinct training items beyond the private batch of ``batch_size`` that this
        link draws (``DefenseContext.sample_batch``): checked before a run, where too few
        had made every cell an error record."""
        return 0

    def transform_batch(
        self, x: torch.Tensor, y: torch.Tensor, ctx: DefenseContext
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Data-level defenses change what the client trains on.

        ``x`` is in model-input space; ``y`` holds class indices or soft-label rows (B×K),
        and a data-level defense may return soft labels.
        """
        return x, y

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        """Update-level defenses change what the client shares."""
        return update


@dataclass
class DefenseContext:
    """What a client-side defense may use.

    ``x``/``y`` are the batch the update was computed on (after data-level defenses);
    ``generator`` is a CPU generator seeded per cell for the defense's randomness;
    ``sample_batch(n)`` draws ``n`` further training images (model-input space) and labels
    from the same dataset, seeded too: other clients' data for secure aggregation, or the
    private dataset's other images for MixUp/InstaHide (in an attack cell, none of the
    private batch and none drawn before: :func:`bench.data.other_batches`).
    """

    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    client: ClientSpec
    generator: torch.Generator
    num_classes: int
    sample_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]] | None = None
    # the other clients' batches (model-input space, labels) a protocol-level defense
    # aggregated with this client's update, in order: the pipeline scores against them too
    aggregated: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    # the dataset's per-channel pixel mean in model-input space, (1, C, 1, 1) on the batch's
    # device (0 where the harness normalises; mid-grey where a dataset states no
    # ``pixel_mean``); None for text: :func:`bench.data.input_centre`
    centre: torch.Tensor | None = None
    # a Poisson-sampled batch's expected size (the utility track's DP training, FedSGD), by
    # which a DP mean divides; None: the batch has a fixed size, len(x)
    expected_batch: int | None = None


def observed_batch(chain: Sequence[Defense], batch_size: int) -> int:
    """The samples the observed update covers after every link of ``chain``."""
    for d in chain:
        batch_size = d.observed_batch(batch_size)
    return batch_size


class Arch(Component):
    """Base class: build a model for an input shape and a number of classes."""

    paper: str = ""
    modalities: frozenset[str] = frozenset({"image"})  # the data it takes

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        raise NotImplementedError

    def build_for(self, meta: DatasetMeta) -> nn.Module:
        """The model for a dataset: :meth:`build` on its shape and classes (a text
        architecture reads the vocabulary and the task from ``meta`` too)."""
        return self.build(tuple(meta.shape), meta.num_classes)

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        """Re-initialise ``model`` from ``generator``; the default keeps torch's seeded init."""

    def parameter_count(self, input_shape: tuple[int, int, int], num_classes: int
                        ) -> int | None:
        """The parameters :meth:`build` would make, counted on the meta device (nothing
        allocated), or None where it does not build there (then the real build decides)."""
        try:
            with torch.device("meta"):
                model = self.build(input_shape, num_classes)
        except Exception:  # noqa: BLE001 - the real build reports it
            return None
        return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class DatasetMeta:
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()
    modality: str = "image"  # "image" or "text"
    vocab: tuple[str, ...] = ()  # text: the tokenizer's tokens, by id
    task: str = ""  # text: "lm" (next token) or "classify"
    # images: the per-channel mean of the training pixels in [0,1], known whether or not the
    # harness normalises (``mean`` is then 0): where a defense centres data (InstaHide)
    pixel_mean: tuple[float, ...] = ()


class Dataset(Component):
    """Base class: images in [0,1] with labels, split into train and test (a text dataset:
    token-id sequences, see :mod:`bench.datasets.text_common`)."""

    paper: str = ""
    modality: str = "image"
    # why the held-out split shares content with the training split, where it does: then it
    # cannot be a public split (bench.public) and an attack needing one is skipped
    no_public_split: str | None = None

    def meta(self) -> DatasetMeta:
        raise NotImplementedError

    def load(self, split: str) -> TorchDataset:
        """Return ``split`` ("train" | "test") as (image in [0,1], shape C×H×W; int label) pairs.

        The harness normalises with ``meta().mean/std`` before the model sees an image.
        """
        raise NotImplementedError

    def source(self) -> dict[str, Any] | None:
        """Where the data comes from beyond the parameters: for files read from a folder (a
        ``root`` or ``$LEAKBENCH_DATA``), the folder and a fingerprint of its files, so that
        caches keyed on the dataset (trained victims) follow the files; None for data that
        ships with a package."""
        return None
