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

Below the bound the beam's ranking can still get a batch wrong on a trained model. The
record says when the batch returned is known right: ``certified`` when every block weight
gradient lies in the span of the rows that batch gives its layer, to float32 rounding
(``unexplained``, the largest share of a gradient's energy outside it, at most
:func:`attacks.dager_certificate.certified_share`), and each distinct sentence returned is needed
for that. Where the ranked batch is not certified but a batch could be (every block weight
gradient's energy beyond its B·L largest singular values is within the bound: no noise or
pruning on the update beyond rounding), the same measure searches
the beam's sentences, widening the beam, and a batch it certifies replaces the ranked one
(``searched_widths``, ``swaps`` in the record). Not certified is no verdict of wrong: a
perturbed update is explained by no batch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from attacks.dager_certificate import certifiable, certificate, explaining_batch
from attacks.dager_spans import (
    log_residual,
    new_span,
    numerical_rank,
    prefix_layers,
    residual,
    row_basis,
    span_dimension,
)
from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import Param, register_attack

OUTLIER = 4.0
"""A true prefix's score lies this many median absolute deviations below the candidates'
median (DAGER's outlier filter): the false candidates form the bulk."""

BEAM = 4
"""Prefixes kept per sequence of the batch, ranked by their worst step (z-score): a false
prefix that scores near a true one at its last token falls behind once extended."""

WIDEST = 8
"""Prefixes per sequence the beam may widen to, doubling from :data:`BEAM`, while the batch
found does not explain an update that a batch could explain (:meth:`Dager._search`). Each
doubling costs about twice the beam's pass; a search that certifies nothing (a little noise
the span checks do not survive) is bounded by a few passes."""


def worst_first(z: tuple[float, ...]) -> tuple[float, ...]:
    """A prefix's z-scores, worst (highest) first: prefixes compare by their worst step, then
    their next worst, … . By the worst step alone, a false sequence that leaves a true one at
    its last tokens ties with it (their worst step is in the prefix they share) and, ranked
    first, took a true sequence's place (a text-track hunt: [7]*12 beside [8, 9]*6)."""
    return tuple(sorted(z, reverse=True))


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
        first = grads["blocks.0.qkv.weight"]
        said = ("no span to check tokens against in a non-finite update"
                if not all(bool(torch.isfinite(t).all()) for t in obs.update.tensors) else
                "the first layer's gradient is all zero: no span to check tokens against"
                if not bool(first.any()) else None)
        if said:  # a closed form given nothing: diverged and says why (as R-GAP, analytic)
            return Reconstruction(data=torch.zeros(batch, length, dtype=torch.long),
                                  iterations=0, grad_evals=0,
                                  info={"diverged": True, "diverged_reason": said})
        rows, width = batch * length, model.tok.weight.shape[1]
        cap = min(rows, width)
        basis1 = row_basis(first, cap, self.rank_tol)
        with torch.no_grad():
            residuals, gram = self._residuals(model, basis1, length)
            dim = span_dimension(gram, len(residuals) * len(residuals[0]), self.tolerance)
            in_span = int(torch.stack([r <= self.tolerance for r in residuals]).any(0).sum())
            info: dict[str, Any] = {
                "rows": rows, "width": width, "candidate_dim": dim, "tokens_in_span": in_span,
                "bound_exceeded": rows >= dim or in_span > rows,
                "rank_layer1": numerical_rank(first)}
            per_position = self._tokens(residuals, batch, length)
            info["tokens_per_position"] = [len(t) for t in per_position]
            if batch == 1 or not prefix_layers(model):
                seqs, judged = self._by_rank(per_position, batch), None
                info["ordering"] = "one sequence" if batch == 1 else "residual rank"
            else:
                info["layers_checked"] = len(prefix_layers(model))
                found = self._token_set(per_position, cap)
                info["token_set"] = len(found)
                seqs, judged = self._search(model, grads, found, length, batch, obs.device,
                                            info)
                info["ordering"] = "span checks of every later layer"
        info["sequences_found"] = len({tuple(s) for s in seqs})
        data = torch.tensor(seqs, dtype=torch.long)
        # the batch returned explains the whole update, to rounding, and needs each of its
        # distinct sentences: then they are the batch's, and the record can say so (the
        # search has judged its answer already, where it ran)
        unexplained, explains = judged or certificate(model, grads, seqs, obs.device)
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

    def _search(self, model: nn.Module, grads: dict[str, torch.Tensor], found: list[int],
                length: int, batch: int, device: torch.device, info: dict[str, Any]
                ) -> tuple[list[list[int]], tuple[float, bool] | None]:
        """The beam's batch (:meth:`_select`), or, where it is not certified but a batch of
        B·L rows could be (the bound not exceeded, :func:`certifiable`: no noise or pruning
        beyond rounding on the update), a batch of the beam's sentences that is: swaps of the
        beam's sentences (:func:`explaining_batch`, at most ``batch`` of them), the beam
        refilled with the best non-outliers and doubled up to :data:`WIDEST` until one
        certifies (a true prefix that is no outlier at one step can fall out of a beam full
        of false ones crossing true sentences). ``info``: the widths searched, the swaps.
        With the batch, its :func:`certificate` where the search computed it, else None."""
        beam = self._extend(model, grads, found, length, batch, device, BEAM)
        ranked = self._fill(self._select(model, beam, batch, device), batch)
        info["searched_widths"], info["swaps"] = [], 0
        if info["bound_exceeded"] or not certifiable(model, grads, info["rows"]):
            return ranked, None
        judged = certificate(model, grads, ranked, device)
        if judged[1]:
            return ranked, judged
        width, seqs = BEAM, ranked
        while True:
            info["searched_widths"].append(width)
            certified, swaps, unexplained = explaining_batch(model, grads, beam, seqs, device,
                                                             batch)
            info["swaps"] += swaps
            if certified is not None:
                return certified, (unexplained, True)
            width *= 2
            if width > WIDEST:
                return ranked, judged
            beam = self._extend(model, grads, found, length, batch, device, width, fill=True)
            seqs = self._fill(self._select(model, beam, batch, device), batch)

    def _extend(self, model: nn.Module, grads: dict[str, torch.Tensor], found: list[int],
                length: int, batch: int, device: torch.device, width: int = BEAM,
                fill: bool = False) -> list[list[int]]:
        """Beam extension: each prefix × each token of the set, scored by the mean over the
        layers of :func:`prefix_layers` of the log residual of its row at the new position;
        kept when its geometric mean residual is ≤ ``tolerance`` and an outlier below the
        candidates' bulk (the residual alone where no candidate is an outlier); ``width`` ×
        ``batch`` prefixes ranked by their worst step, then the next (:func:`worst_first`), the
        best of the rest below the tolerance filling the room the outliers leave where
        ``fill`` (the search's wider beams: the fillers change the next step's candidates and
        so its bulk, which can push a true prefix out of the first beam); the beam's full
        sequences, best first."""
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
            kept = [passed or below or [int(score.argmin())]]
            if passed and fill:  # room left behind the outliers: the best of the rest below
                # the tolerance (a true prefix need not be an outlier at every step)
                outliers = set(passed)
                kept.append([i for i in below if i not in outliers])
            beam = [c for group in kept for c in sorted(
                ((cands[i][0], worst_first((*cands[i][1], float(z[i])))) for i in group),
                key=lambda c: c[1])][:width * batch]
        return [seq for seq, _ in beam]

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
