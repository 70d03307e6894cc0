"""Applying a defense chain to a client: the one place that orders its links."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.returns import check_update, checked_batch


def defend(chain: Sequence[Defense], ctx: DefenseContext,
           compute: Callable[[torch.Tensor, torch.Tensor], Update]) -> Update:
    """Every link's batch transform (data level: what the client trains on), then the client's
    update on the transformed batch, then every link's update transform (what it shares).

    ``ctx.x``/``ctx.y`` hold the transformed batch afterwards. Int8 scales describe the int8
    message: once a later link changes its tensors (clip, noise, an aggregate), they no longer
    travel with it and stay in the record as ``own_int8_scales``.
    """
    for d in chain:
        if len(ctx.x):  # an empty batch (a Poisson draw of none) has nothing to transform
            ctx.x, ctx.y = checked_batch(d, d.transform_batch(ctx.x, ctx.y, ctx), ctx.x)
    update = compute(ctx.x, ctx.y)
    for d in chain:
        before = update
        update = d.transform_update(update, ctx)
        check_update(d, before, update)
        if "int8_scales" in before.info and _changed(before, update) \
                and update.info.get("int8_scales") == before.info["int8_scales"]:
            update.info["own_int8_scales"] = update.info.pop("int8_scales")
    update.info = voided_privacy(update.info, chain)
    return update


def voided_privacy(info: dict[str, Any], chain: Sequence[Defense]) -> dict[str, Any]:
    """``info`` with its ε set to None and an ``epsilon_note`` where a data-level link of
    ``chain`` mixes each private item with other training items (MixUp, InstaHide; every batch
    transform runs before the update is computed, wherever the link stands). An item then
    also enters other rows as a partner, drawn whether or not the step sampled it, so one item
    moves several clipped rows and joins steps beyond its sampling rate: DP-SGD's per-item
    accounting (sensitivity C, rate q) no longer bounds it, and reporting its ε would
    overstate the guarantee. Likewise where a link after the one that makes the update
    private reads the private batch (Soteria's mask, from the client's images): the shared
    update is then no post-processing of the private one (which pixels survive is a function
    of the images themselves), and no ε bounds it."""
    if info.get("epsilon") is None:
        return info
    mixers = [d.registry_name for d in chain if d.level == "data" and d.extra_items(1) > 0]
    readers = [d.registry_name for k, d in enumerate(chain)
               if d.reads_batch and any(c.recomputes_update for c in chain[:k])]
    notes = []
    if mixers:
        notes.append(f"{', '.join(mixers)} mixes each item with other training items before "
                     f"the update, which the per-item accountant does not bound (an item "
                     f"enters other rows and other steps as a partner)")
    if readers:
        notes.append(f"{', '.join(readers)} reads the private batch after the private update "
                     f"is made, so what it shares is no post-processing of it")
    if not notes:
        return info
    return {**info, "epsilon": None, "epsilon_note": "; ".join(notes)}


def _changed(before: Update, after: Update) -> bool:
    """Whether a link changed the shared tensors (not merely the record's info); both hold a
    tensor per parameter (:func:`bench.returns.check_update`)."""
    return any(a.shape != b.shape or not torch.equal(a, b)
               for a, b in zip(before.tensors, after.tensors))


def diverged_reason(update: Update | None, chain_label: str, attack_said: object = None
                    ) -> str:
    """Why a cell diverged: the attack's own reason where its ``info`` gives one
    (``diverged_reason``: a closed form given an all-zero update), else that its loss or
    image became NaN/inf; and where the shared update already held such values, that the
    defense made them (fp16 past ±65504, a plug-in multiplying by NaN), which had read as the
    attack's failure alone."""
    reason = (attack_said if isinstance(attack_said, str) and attack_said
              else "the attack's loss or image became NaN/inf")
    if update is not None and not all(bool(torch.isfinite(t).all()) for t in update.tensors):
        reason += f" (the update shared after {chain_label} already held non-finite values)"
    return reason
