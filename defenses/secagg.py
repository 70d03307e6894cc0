"""Secure aggregation (Bonawitz et al., CCS 2017): the server sees only the clients' sum.

The private client's update is aggregated with the updates of K−1 other clients, each on
its own batch of the same size drawn from the same dataset (``ctx.sample_batch``: images no
other client holds, the private one included) and
computed by the same client procedure (``bench.client.compute_update``: FedSGD gradient or
FedAvg delta) from the same model. The other clients run no defense of their own. In a
chain, every data-level link transforms the private client's batch (``bench.defend`` applies
all batch transforms before the update is computed, wherever the link stands); update-level
links before ``secagg`` act on the private client's update only; after it only ``noise``
(``in_aggregate``: made inside the protocol) may follow. With ``reduce: mean`` the aggregate
is divided by K, which the server knows anyway: for FedSGD without BatchNorm in train mode
it is the gradient of the union of the K batches (equal batch sizes; BatchNorm's batch
statistics and FedAvg's local steps are per client), the form an attack matches best.
K = 1 leaves the update unchanged.

What the server observes is an update of K·B samples, and the protocol makes K (and the
batch size) public: :meth:`SecAgg.observed_batch` declares K·B, so an attack is checked
against, and reconstructs, the whole aggregated batch. The other clients' batches go to
``ctx.aggregated`` (never to the attacker), so that the harness scores a reconstruction
against all K·B images and counts the private client's own separately.
"""

from __future__ import annotations

import torch

from bench.client import compute_update, pooled_bn_stats
from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


@register_defense("secagg")
class SecAgg(Defense):
    """Aggregate the update with K−1 other clients' updates; the server sees the sum (or mean)."""

    level = "protocol"
    paper = ("Bonawitz et al. Practical Secure Aggregation for Privacy-Preserving Machine "
             "Learning. CCS 2017")
    params = (
        Param("clients", int, 4, low=1, high=10_000,
              help="K: clients in the aggregate, the private one included; 1 is the identity"),
        Param("reduce", str, "mean", choices=("mean", "sum"),
              help="mean: the sum divided by K (the server knows K); sum: the raw sum"),
    )

    def observed_batch(self, batch_size: int) -> int:
        """K·B: the aggregate covers every client's batch."""
        return self.clients * batch_size

    def extra_items(self, batch_size: int) -> int:
        """The K − 1 other clients' batches."""
        return (self.clients - 1) * batch_size

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        if self.clients == 1:
            return update
        if ctx.sample_batch is None:
            raise ValueError("secagg needs the defense context's sample_batch to draw the "
                             "other clients' batches")
        batch = len(ctx.x)
        updates = [update]
        for _ in range(self.clients - 1):
            x, y = ctx.sample_batch(batch)
            ctx.aggregated.append((x, y))
            updates.append(compute_update(ctx.model, x, y, ctx.client))
        tensors = [torch.stack(parts).sum(0) for parts in zip(*(u.tensors for u in updates))]
        if self.reduce == "mean":
            tensors = [t / self.clients for t in tensors]
        bn_stats = None
        if all(u.bn_stats is not None for u in updates):
            bn_stats = pooled_bn_stats([u.bn_stats for u in updates])  # type: ignore[misc]
        info = dict(update.info)  # a quantised client's int8 scales: made private by defend
        info["secagg_clients"] = self.clients
        if self.reduce == "sum":  # the server, knowing K, divides before it applies the update
            info["aggregate_of"] = self.clients
        return Update(tensors, update.kind, bn_stats, info)
