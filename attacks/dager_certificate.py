"""DAGER's certificate: does the batch returned explain the whole update? A weight gradient
is a sum of outer products with the rows its layer saw, so the true batch explains every block
weight gradient to float32 rounding and a batch with a wrong sentence leaves the rows it lacks
unexplained. The same measure picks, among the beam's sentences, a batch that explains it."""

from __future__ import annotations

import math

import torch
from torch import nn

from attacks.dager_spans import block_linears, layer_inputs, row_basis

CERTIFIED = 1e-10
"""The largest share of a block weight gradient's energy the recovered batch may leave
unexplained and be certified (:func:`unexplained_energy`). A weight gradient is a sum of
outer products with the rows its layer saw, so the true batch explains it up to the
update's rounding (float32: shares of order 1e-14) and a batch with a wrong token leaves the
rows it lacks unexplained, in proportion to the gradient's weight on that position (1e-7 to
1e-3 on the text suite's victims); noise or pruning of the update leaves every batch
uncertified. A wrong row whose position carries less than this share of a layer's gradient
would pass: the update says too little about it."""

ROUNDING_MARGIN = 100
"""How far above float32 rounding a certified batch may leave the update unexplained: the
rounding of a sum over ``rows`` outer products leaves a share of about ``rows`` · u² (u the
float32 unit roundoff, 2⁻²⁴), and the true batches seen leave 20 to 2 400 times less than
``ROUNDING_MARGIN`` times it."""


def certified_share(rows: int) -> float:
    """The share a batch giving each block layer ``rows`` input rows may leave unexplained
    and be certified: :data:`ROUNDING_MARGIN` times float32's rounding for that many rows, at
    most :data:`CERTIFIED`. The search swaps sentences until the share falls under it, so a
    looser bound is one it reaches with wrong sentences (a text-track hunt: batch 16 of
    3-token sentences, a trained victim, certified at 9.8e-11 with 2 of 16 wrong, where the
    true batch leaves 7.1e-15)."""
    return min(CERTIFIED, ROUNDING_MARGIN * max(rows, 1) * 2.0 ** -48)


def block_weight_grads(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The blocks' weight gradients in float64 on the CPU, converted once for the many
    batches a search checks against them."""
    return {n: g.detach().double().cpu() for n, g in grads.items()
            if n.startswith("blocks.") and n.endswith(".weight")}


def unexplained_energy(model: nn.Module, grads: dict[str, torch.Tensor], ids: torch.Tensor
                       ) -> float:
    """The largest share, over every linear layer of the blocks, of its weight gradient's
    squared norm outside the span of the input rows the sequences ``ids`` give that layer:
    0 (to rounding) where they are the batch the gradient came from; 1 where a layer's
    gradient is zero (an update with nothing in it is evidence of no batch)."""
    layers = block_linears(model)
    inputs = layer_inputs(model, layers, ids)
    worst = 0.0
    for name, _ in layers:
        g = grads[f"blocks.{name}.weight"].detach().double().cpu()
        total = float(g.norm()) ** 2
        if not total > 0.0:
            return 1.0
        rows = inputs[name].reshape(-1, inputs[name].shape[-1])
        span = row_basis(rows, rows.shape[0], 1e-9)
        worst = max(worst, float((g - (g @ span) @ span.T).norm()) ** 2 / total)
    return worst


def certificate(model: nn.Module, grads: dict[str, torch.Tensor], seqs: list[list[int]],
                device: torch.device) -> tuple[float, bool]:
    """(:func:`unexplained_energy` of the batch ``seqs``, whether it is ≤ :func:`certified_share`
    and each distinct sequence is needed: without it the rest leave more unexplained).
    The second half catches a batch holding one sentence twice, whose spare rows let a
    returned false sentence beside the true ones explain the update too; how often a
    sentence occurs, the span cannot say."""
    ids = torch.tensor(seqs, dtype=torch.long, device=device)
    bound = certified_share(ids.numel())
    grads = block_weight_grads(grads)
    unexplained = unexplained_energy(model, grads, ids)
    distinct = list(dict.fromkeys(map(tuple, seqs)))
    if unexplained > bound or len(distinct) == 1:
        return unexplained, unexplained <= bound
    needed = all(unexplained_energy(model, grads, torch.tensor(
        [list(t) for t in distinct if t != d], dtype=torch.long, device=device)) > bound
        for d in distinct)
    return unexplained, needed


def certifiable(model: nn.Module, grads: dict[str, torch.Tensor], rows: int) -> bool:
    """Whether any batch whose sequences give each layer ``rows`` input rows could pass the
    certificate: by Eckart–Young the span of ``rows`` rows leaves at least a gradient's
    energy beyond its ``rows`` largest singular values unexplained, so where that share
    exceeds :func:`certified_share` in some block layer (noise or pruning on the update), no batch
    can, and a search for one is futile."""
    for name, _ in block_linears(model):
        energy = torch.linalg.svdvals(grads[f"blocks.{name}.weight"].detach().double().cpu()
                                      ).square()
        total = float(energy.sum())
        if not total > 0.0 or float(energy[rows:].sum()) / total > certified_share(rows):
            return False
    return True


def swap_shares(rows: dict[str, torch.Tensor], grads: dict[str, torch.Tensor],
                batch: list[int], slot: int, cands: list[int]) -> torch.Tensor:
    """For each sentence of ``cands`` (indices into ``rows``: per layer, sentences × L × its
    width, float64), the largest share over the layers of its weight gradient left outside
    the span of the rows of ``batch`` with sentence ``slot`` swapped for it. The span of the
    rest is taken once; each candidate adds the part of its rows outside it (its singular
    directions above 1e-9 of the rest's largest, as :func:`unexplained_energy` cuts)."""
    worst = torch.zeros(len(cands), dtype=torch.float64)
    rest = [b for j, b in enumerate(batch) if j != slot]
    for name, r in rows.items():
        g = grads[f"blocks.{name}.weight"]
        total = float(g.norm()) ** 2
        if not total > 0.0:
            return torch.ones(len(cands), dtype=torch.float64)
        stacked = r[rest].reshape(-1, r.shape[-1])
        span = row_basis(stacked, stacked.shape[0], 1e-9)
        left = g - (g @ span) @ span.T
        extra = r[cands] - (r[cands] @ span) @ span.T  # cands × L × width
        _, sv, vh = torch.linalg.svd(extra, full_matrices=False)
        floor = 1e-9 * float(torch.linalg.matrix_norm(stacked, ord=2)) if rest else 0.0
        keep = (sv > floor).to(torch.float64) * (sv > 0)
        gained = (torch.einsum("oi,cki->cko", left, vh).square().sum(-1) * keep).sum(-1)
        worst = torch.maximum(worst, (float(left.norm()) ** 2 - gained).clamp_min(0) / total)
    return worst


def explaining_batch(model: nn.Module, grads: dict[str, torch.Tensor], pool: list[list[int]],
                     batch: list[list[int]], device: torch.device, rounds: int
                     ) -> tuple[list[list[int]] | None, int, float]:
    """A batch of ``len(batch)`` sentences, from ``batch`` by swapping its sentences for others
    of ``pool``, that :func:`certificate` passes, or None; the swaps made; and the certified
    batch's :func:`unexplained_energy` (NaN where there is none). Each round
    makes the swap that leaves least of the update unexplained (by :func:`swap_shares`)
    while it lowers :func:`unexplained_energy`, at most ``rounds`` of them; then a sentence
    the rest explain without is dropped and the rest repeated in its place (a batch may hold
    one sentence twice). Only a certified batch is returned: on an update with a little
    noise, too little to raise the first layer's rank, swaps that explain slightly more fit
    the noise and can make the batch worse (a review's finding).

    The beam ranks prefixes by each step's span check alone; a false sentence crossing two
    true ones can outrank a true one there, but leaves the rows it lacks unexplained in every
    layer at once (a text-track hunt: cells 11 and 15 of the text suite at batch 8, trained
    victim)."""
    grads = block_weight_grads(grads)
    sentences = list(dict.fromkeys(map(tuple, batch + pool)))
    at = {t: k for k, t in enumerate(sentences)}
    ids = torch.tensor(sentences, dtype=torch.long, device=device)
    rows = {n: x.double().cpu() for n, x in layer_inputs(model, block_linears(model), ids).items()}
    chosen = [at[tuple(t)] for t in batch]

    def left(picked: list[int]) -> float:
        return unexplained_energy(model, grads, ids[picked])

    bound = certified_share(ids.shape[1] * len(batch))
    best, swaps = left(chosen), 0
    while best > bound and swaps < rounds:
        cands = [k for k in range(len(sentences)) if k not in chosen]
        if not cands:
            break
        shares = torch.stack([swap_shares(rows, grads, chosen, i, cands)
                              for i in range(len(chosen))])  # slots × cands
        slot, c = divmod(int(shares.argmin()), len(cands))
        swapped = chosen[:slot] + [cands[c]] + chosen[slot + 1:]
        share = left(swapped)
        if not share < best:
            break
        best, chosen, swaps = share, swapped, swaps + 1
    if best > bound:
        return None, swaps, math.nan
    needed = list(dict.fromkeys(chosen))
    for k in reversed(needed[1:]):  # the latest-ranked first
        if left([j for j in needed if j != k]) <= bound:
            needed.remove(k)
    found = [list(sentences[needed[i % len(needed)]]) for i in range(len(batch))]
    unexplained, certified = certificate(model, grads, found, device)
    return (found, swaps, unexplained) if certified else (None, swaps, math.nan)
