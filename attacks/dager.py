"""DAGER: exact batch recovery from a transformer's gradients (Petrov, Dimitrov, Baader,
Müller, Vechev. DAGER: Exact Gradient Inversion for Large Language Models. NeurIPS 2024).

The weight gradient of a linear layer is Σₜ δₜ zₜᵀ over the B·L input rows zₜ it saw, so its
row space is spanned by those rows and its rank is at most B·L. When B·L is below the
dimension the candidate rows span (at most the width d), a vector z lies in that span
(numerically: its relative residual after projection onto the gradient's top singular
vectors is below ``tolerance``) only if it is a linear combination of the rows. DAGER
tests every possible row:

1. Layer 1: the first block's query/key/value map (``blocks.0.qkv``) sees
   z = LayerNorm(token embedding + position embedding). A token v is in the batch iff
   z(v, p) is in the span for some position p. The position is not identified for B > 1:
   embeddings add, so E[v] + P[p] is a combination of rows whenever v and p occur in the
   batch (E[v] + P[t] − E[w] + … ); at B = 1 the per-position check is exact and is the
   answer.
2. Later layers: sequences are grown token by token from that token set. A prefix extended
   by a candidate token gives (the blocks are causal) every later linear layer's input row
   at that position (the second block's query/key/value map, both blocks' attention output
   and MLP maps), a non-linear function of the prefix, in each layer's gradient span iff
   the prefix is one of the batch's. On a trained model the float32 gradient is dominated
   by a few directions (the residual stream's common component), and the small singular
   directions that separate a true prefix from a false one are lost in rounding: no single
   layer separates them, so, as DAGER averages its layers, a candidate's score is its mean
   log residual over all of them. A beam of prefixes, ranked by their worst step, survives
   a false prefix that scores well at its last token; a sequence crossing two chosen ones
   (it adds no new first-layer row) is skipped.

Exact while B·L is below the dimension the candidate rows span: the check reads LayerNorm
outputs, and at initialisation (gain 1, bias 0) every one sums to zero, so the candidates lie
in a (d−1)-dimensional plane and at B·L = d − 1 the gradient's row space is that whole plane.
That dimension is counted to the tolerance (``candidate_dim``: the fewest principal directions
of the unit candidate rows that leave them an RMS residual ≤ ``tolerance``; by Eckart–Young no
span of fewer dimensions holds them all). When B·L reaches it, or when more distinct tokens
pass the first-layer check than the batch has rows, the check no longer separates the batch
from the rest and the record says so (``bound_exceeded``). With one block, the sequences are
checked at its attention output and MLP maps (the attention is causal: their input at a
position is a function of the prefix up to it).

Below the bound the beam can still lose a true prefix on a trained model. The record says
when the batch returned is known right: ``certified`` when every block weight gradient lies
in the span of the rows that batch gives its layer, to float32 rounding (``unexplained``, the
largest share of a gradient's energy outside it; :data:`CERTIFIED`), and each distinct
sentence returned is needed for that. Not certified is no verdict of wrong: a perturbed
update (noise, pruning) is explained by no batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import Param, register_attack


def row_basis(grad: torch.Tensor, cap: int, rank_tol: float) -> torch.Tensor:
    """An orthonormal basis (d×r, float64) of the row space of ``grad``: the right singular
    vectors whose singular value exceeds ``rank_tol`` × the largest, at most ``cap``."""
    _, s, vh = torch.linalg.svd(grad.detach().double().cpu(), full_matrices=False)
    if s.numel() == 0 or float(s[0]) == 0.0:
        return torch.zeros(vh.shape[-1], 0, dtype=torch.float64)
    r = int((s > rank_tol * s[0]).sum()) if rank_tol > 0 else int((s > 0).sum())
    return vh[: max(1, min(r, cap))].T


def numerical_rank(grad: torch.Tensor) -> int:
    """The numerical rank of ``grad``: its singular values above the largest × max(m, n) × the
    machine epsilon of its dtype (NumPy's ``matrix_rank`` rule)."""
    s = torch.linalg.svdvals(grad.detach().double().cpu())
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    eps = torch.finfo(grad.dtype).eps if grad.dtype.is_floating_point else 0.0
    return int((s > s[0] * max(grad.shape) * eps).sum())


def span_dimension(gram: torch.Tensor, count: int, tolerance: float) -> int:
    """The fewest principal directions of ``count`` unit rows, given their Gram matrix
    (d×d, Σ zzᵀ), that leave them an RMS relative residual ≤ ``tolerance``: the dimension the
    rows span, counted to the span check's tolerance."""
    ev = torch.linalg.eigvalsh(gram.double()).flip(0).clamp_min(0.0)  # descending
    tail = ev.flip(0).cumsum(0).flip(0) / max(count, 1)  # tail[k]: mean residual² beyond k
    within = (tail <= tolerance ** 2).nonzero()
    return int(within[0]) if len(within) else int(ev.numel())


def residual(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """‖z − proj(z)‖ / ‖z‖ for each row of ``z`` (…×d) against the span of ``basis``, on
    the basis's device (the CPU, where :func:`row_basis` takes its SVD)."""
    z = z.double().to(basis.device)
    proj = (z @ basis) @ basis.T
    return (z - proj).norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-30)


OUTLIER = 4.0
"""A true prefix's score lies this many median absolute deviations below the candidates'
median (DAGER's outlier filter): the false candidates form the bulk."""

BEAM = 4
"""Prefixes kept per sequence of the batch, ranked by their worst step (z-score): a false
prefix that scores near a true one at its last token falls behind once extended."""

CERTIFIED = 1e-10
"""The largest share of a block weight gradient's energy the recovered batch may leave
unexplained and be certified (:func:`unexplained_energy`). A weight gradient is a sum of
outer products with the rows its layer saw, so the true batch explains it up to the
update's rounding (float32: shares of order 1e-14) and a batch with a wrong token leaves the
rows it lacks unexplained, in proportion to the gradient's weight on that position (1e-7 to
1e-3 on the text suite's victims); noise or pruning of the update leaves every batch
uncertified. A wrong row whose position carries less than this share of a layer's gradient
would pass: the update says too little about it."""


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
    """(:func:`unexplained_energy` of the batch ``seqs``, whether it is ≤ :data:`CERTIFIED`
    and each distinct sequence is needed: without it the rest leave more unexplained).
    The second half catches a batch holding one sentence twice, whose spare rows let a
    returned false sentence beside the true ones explain the update too; how often a
    sentence occurs, the span cannot say."""
    ids = torch.tensor(seqs, dtype=torch.long, device=device)
    grads = {n: g.detach().double().cpu() for n, g in grads.items()  # once, not per batch
             if n.startswith("blocks.") and n.endswith(".weight")}
    unexplained = unexplained_energy(model, grads, ids)
    distinct = list(dict.fromkeys(map(tuple, seqs)))
    if unexplained > CERTIFIED or len(distinct) == 1:
        return unexplained, unexplained <= CERTIFIED
    needed = all(unexplained_energy(model, grads, torch.tensor(
        [list(t) for t in distinct if t != d], dtype=torch.long, device=device)) > CERTIFIED
        for d in distinct)
    return unexplained, needed


def worst_first(z: tuple[float, ...]) -> tuple[float, ...]:
    """A prefix's z-scores, worst (highest) first: prefixes compare by their worst step, then
    their next worst, … . By the worst step alone, a false sequence that leaves a true one at
    its last tokens ties with it (their worst step is in the prefix they share) and, ranked
    first, took a true sequence's place (a text-track hunt: [7]*12 beside [8, 9]*6)."""
    return tuple(sorted(z, reverse=True))


def block_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The blocks' linear layers, by their names under ``model.blocks``."""
    return [(n, m) for n, m in model.blocks.named_modules() if isinstance(m, nn.Linear)]


def prefix_layers(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The blocks' linear layers whose input at a position is a function of the prefix up to
    it (causal blocks), all but the first block's query/key/value map (the token check)."""
    return [(n, m) for n, m in block_linears(model) if n != "0.qkv"]


def layer_inputs(model: nn.Module, layers: list[tuple[str, nn.Linear]], ids: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """The input each of ``layers`` sees (B×L×its width) when ``model`` reads ``ids``."""
    rows: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _m, i, _o, n=n: rows.__setitem__(n, i[0]))
             for n, m in layers]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return rows


def log_residual(model: nn.Module, layers: list[tuple[str, nn.Linear]],
                 bases: dict[str, torch.Tensor], ids: torch.Tensor, p: int) -> torch.Tensor:
    """Mean over ``layers`` of log ‖z − proj(z)‖/‖z‖ for each sequence's input row at
    position ``p``: one span check per layer, averaged as DAGER averages its layers (a float32
    gradient of a trained model loses its small singular directions, so no single layer
    separates every true prefix from every false one; together they do)."""
    rows = layer_inputs(model, layers, ids)
    logs = [residual(rows[n][:, p], bases[n]).clamp_min(1e-30).log() for n, _ in layers]
    return torch.stack(logs).mean(0).cpu()


def new_span(span: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of span(``span``'s columns, ``rows``), dropping rows already in it
    (relative residual ≤ 1e-3)."""
    for r in rows:
        rest = r - span @ (span.T @ r)
        if float(rest.norm()) > 1e-3 * float(r.norm()):
            span = torch.cat([span, (rest / rest.norm())[:, None]], dim=1)
    return span


@register_attack("dager")
class Dager(Attack):
    """Span checks of the layers' gradients: the batch's tokens at the first attention layer,
    then its sequences by beam extension over every later layer (exact while batch × length
    is below the dimension the first layer's candidate rows span: width − 1 at init)."""

    paper = ("Petrov, Dimitrov, Baader, Müller, Vechev. DAGER: Exact Gradient Inversion for "
             "Large Language Models. NeurIPS 2024")
    modalities = frozenset({"text"})
    params = (
        Param("tolerance", float, 5e-3, low=0.0, high=1.0,
              help="largest relative residual counted as in the gradient's span (first layer; the "
                   "geometric mean over the later layers)"),
        Param("rank_tol", float, 0.0, low=0.0, high=1.0,
              help="drop singular values below this fraction of the largest (0: top B·L kept)"),
    )

    def incompatibility(self, ctx: CellContext) -> str | None:
        if ctx.arch != "transformer":
            return "dager reads the attention layers of leakbench's transformer"
        if ctx.clients > 1:
            return "dager is run on one client's update here, not on a secure aggregate"
        return None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        model = obs.model.to(obs.device).eval()
        grads = dict(zip([n for n, p in model.named_parameters() if p.requires_grad],
                         obs.update.tensors))
        batch, length = obs.batch_size, obs.input_shape[0]
        rows, width = batch * length, model.tok.weight.shape[1]
        cap = min(rows, width)
        basis1 = row_basis(grads["blocks.0.qkv.weight"], cap, self.rank_tol)
        with torch.no_grad():
            residuals, gram = self._residuals(model, basis1, length)
            dim = span_dimension(gram, len(residuals) * len(residuals[0]), self.tolerance)
            in_span = int(torch.stack([r <= self.tolerance for r in residuals]).any(0).sum())
            info: dict[str, Any] = {
                "rows": rows, "width": width, "candidate_dim": dim, "tokens_in_span": in_span,
                "bound_exceeded": rows >= dim or in_span > rows,
                "rank_layer1": numerical_rank(grads["blocks.0.qkv.weight"])}
            per_position = self._tokens(residuals, batch, length)
            info["tokens_per_position"] = [len(t) for t in per_position]
            if batch == 1 or not prefix_layers(model):
                seqs = self._by_rank(per_position, batch)
                info["ordering"] = "one sequence" if batch == 1 else "residual rank"
            else:
                info["layers_checked"] = len(prefix_layers(model))
                found = self._token_set(per_position, cap)
                info["token_set"] = len(found)
                seqs = self._extend(model, grads, found, length, batch, obs.device)
                info["ordering"] = "span checks of every later layer"
        info["sequences_found"] = len({tuple(s) for s in seqs})
        data = torch.tensor(seqs, dtype=torch.long)
        # the batch returned explains the whole update, to rounding, and needs each of its
        # distinct sentences: then they are the batch's, and the record can say so
        unexplained, explains = certificate(model, grads, seqs, obs.device)
        info["unexplained"] = unexplained
        info["certified"] = not info["bound_exceeded"] and explains
        return Reconstruction(data=data, iterations=0, grad_evals=0, info=info)

    @staticmethod
    def _residuals(model: nn.Module, basis: torch.Tensor, length: int
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per position, every token's relative residual z(v, p) against ``basis``; and the
        Gram matrix (d×d) of the unit candidate rows z(v, p)/‖z(v, p)‖ over all of them."""
        emb = model.tok.weight
        out, gram = [], torch.zeros(emb.shape[1], emb.shape[1], dtype=torch.float64)
        for p in range(length):
            z = model.blocks[0].ln1(emb + model.pos.weight[p])
            out.append(residual(z, basis))
            unit = nn.functional.normalize(z.double().cpu(), dim=-1)
            gram += unit.T @ unit
        return out, gram

    def _tokens(self, residuals: list[torch.Tensor], batch: int, length: int
                ) -> list[list[tuple[float, int]]]:
        """Per position, (residual, token) of the tokens in the span, best first: at least
        the best one, at most B·L (the answer at B = 1 reads the first one; the token set at
        B > 1 reads them all)."""
        out = []
        for res in residuals:
            order = torch.argsort(res)
            keep = [(float(res[i]), int(i)) for i in order[: max(batch, length * batch)]
                    if res[i] <= self.tolerance]
            out.append(keep or [(float(res[order[0]]), int(order[0]))])
        return out

    @staticmethod
    def _token_set(per_position: list[list[tuple[float, int]]], cap: int) -> list[int]:
        """The tokens in the span at some position, the ``cap`` best (B·L rows at most)."""
        best: dict[int, float] = {}
        for toks in per_position:
            for r, t in toks:
                best[t] = min(r, best.get(t, r))
        return sorted(best, key=lambda t: (best[t], t))[:cap]

    def _extend(self, model: nn.Module, grads: dict[str, torch.Tensor], found: list[int],
                length: int, batch: int, device: torch.device) -> list[list[int]]:
        """Beam extension: each prefix × each token of the set, scored by the mean over the
        layers of :func:`prefix_layers` of the log residual of its row at the new position;
        kept when its geometric mean residual is ≤ ``tolerance`` and an outlier below the
        candidates' bulk (the residual alone where no candidate is an outlier); ``BEAM`` ×
        ``batch`` prefixes ranked by their worst step, then the next (:func:`worst_first`);
        the ``batch`` best full sequences (at least the best one)."""
        layers = prefix_layers(model)
        bases = {}
        for name, lin in layers:
            cap = min(batch * length, lin.in_features)
            bases[name] = row_basis(grads[f"blocks.{name}.weight"], cap, self.rank_tol)
        beam: list[tuple[list[int], tuple[float, ...]]] = [([], ())]  # prefix, its z's
        for p in range(length):
            cands = [(seq + [t], total) for seq, total in beam for t in found]
            ids = torch.tensor([c for c, _ in cands], dtype=torch.long, device=device)
            score = log_residual(model, layers, bases, ids, p)
            med = score.median()
            spread = (score - med).abs().median().clamp_min(1e-12)
            below = [i for i in range(len(cands)) if score[i] <= math.log(self.tolerance)]
            passed = [i for i in below if score[i] <= med - OUTLIER * spread]
            z = (score - med) / spread  # robust z-score of each candidate at this step
            # no outlier: the true prefixes are no minority (at the first position of short
            # sequences, B of about B·L candidates), and the span check alone decides
            scored = [(cands[i][0], worst_first((*cands[i][1], float(z[i]))))
                      for i in passed or below or [int(score.argmin())]]
            beam = sorted(scored, key=lambda c: c[1])[:BEAM * batch]
        return self._fill(self._select(model, [seq for seq, _ in beam], batch, device), batch)

    @staticmethod
    def _select(model: nn.Module, seqs: list[list[int]], batch: int, device: torch.device
                ) -> list[list[int]]:
        """Up to ``batch`` of the beam's sequences, best first, skipping one whose first-block
        rows add no direction to those already chosen: a false sequence crossing two chosen
        true ones shares their (token, position) rows. So can a true one ("the dog sat" beside
        "the cat sat" and "a dog ran"), which passed the later layers' checks as the false ones
        need not: skipped sequences fill the rows still free, best first, before any chosen
        sequence is repeated."""
        ids = torch.tensor(seqs, dtype=torch.long, device=device)
        rows = model.blocks[0].ln1(model.inputs(ids)).double().cpu()  # n × L × d
        chosen: list[int] = []
        span = torch.zeros(rows.shape[-1], 0, dtype=torch.float64)
        for i in range(len(seqs)):
            grown = new_span(span, rows[i])
            if grown.shape[1] > span.shape[1] or not chosen:
                chosen.append(i)
                span = grown
            if len(chosen) == batch:
                break
        skipped = [i for i in range(len(seqs)) if i not in chosen]
        return [seqs[i] for i in chosen + skipped[:batch - len(chosen)]]

    @staticmethod
    def _by_rank(per_position: list[list[tuple[float, int]]], batch: int) -> list[list[int]]:
        """Sequence i takes the i-th best token at each position (the last one when fewer)."""
        return [[toks[min(i, len(toks) - 1)][1] for toks in per_position] for i in range(batch)]

    @staticmethod
    def _fill(seqs: list[list[int]], batch: int) -> list[list[int]]:
        """``batch`` sequences: those found, repeated in order when fewer (a batch may hold
        the same sentence twice)."""
        return [seqs[i % len(seqs)] for i in range(batch)]
