"""Applying a defense chain to a client: the one place that orders its links."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from bench.contracts import Defense, DefenseContext, Update


def defend(chain: Sequence[Defense], ctx: DefenseContext,
           compute: Callable[[torch.Tensor, torch.Tensor], Update]) -> Update:
    """Every link's batch transform (data level: what the client trains on), then the client's
    update on the transformed batch, then every link's update transform (what it shares).

    ``ctx.x``/``ctx.y`` hold the transformed batch afterwards.
    """
    for d in chain:
        if len(ctx.x):  # an empty batch (a Poisson draw of none) has nothing to transform
            ctx.x, ctx.y = d.transform_batch(ctx.x, ctx.y, ctx)
    update = compute(ctx.x, ctx.y)
    for d in chain:
        update = d.transform_update(update, ctx)
    return update
