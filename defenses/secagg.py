"""Secure aggregation (Bonawitz et al., CCS 2017): the server sees only the clients' sum.

The private client's update is aggregated with the updates of K−1 other clients, each on
its own batch of the same size drawn from the same dataset (``ctx.sample_batch``) and
computed by the same client procedure (``bench.client.compute_update``: FedSGD gradient or
FedAvg delta) from the same model. The other clients run no defense of their own: links of
a chain before ``secagg`` act on the private client's update only, links after it on the
aggregate. With ``reduce: mean`` the aggregate is divided by K, which the server knows
anyway: it is the gradient of the union of the K batches (equal batch sizes), the form an
attack matches best. K = 1 leaves the update unchanged.
"""

from __future__ import annotations

import torch

from bench.client import compute_update
from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


def pooled_bn_stats(stats: list[list[tuple[torch.Tensor, torch.Tensor]]]
                    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per BatchNorm layer, the mean and (biased) variance of the union of equal-size batches."""
    pooled = []
    for layer in zip(*stats):
        means = torch.stack([m for m, _ in layer])
        variances = torch.stack([v for _, v in layer])
        mean = means.mean(0)
        pooled.append((mean, variances.mean(0) + ((means - mean) ** 2).mean(0)))
    return pooled


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
            updates.append(compute_update(ctx.model, x, y, ctx.client))
        tensors = [torch.stack(parts).sum(0) for parts in zip(*(u.tensors for u in updates))]
        if self.reduce == "mean":
            tensors = [t / self.clients for t in tensors]
        bn_stats = None
        if all(u.bn_stats is not None for u in updates):
            bn_stats = pooled_bn_stats([u.bn_stats for u in updates])  # type: ignore[misc]
        info = dict(update.info)
        info["secagg_clients"] = self.clients
        if self.reduce == "sum":  # the server, knowing K, divides before it applies the update
            info["aggregate_of"] = self.clients
        return Update(tensors, update.kind, bn_stats, info)
