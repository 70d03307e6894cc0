"""DAGER: exact batch recovery from a transformer's gradients (Petrov, Dimitrov, Baader,
Müller, Vechev. DAGER: Exact Gradient Inversion for Large Language Models. NeurIPS 2024).

The weight gradient of a linear layer is Σₜ δₜ zₜᵀ over the B·L input rows zₜ it saw, so its
row space is spanned by those rows and its rank is at most B·L. When B·L is below the width
d, a vector z lies in that span (numerically: its relative residual after projection onto
the gradient's top singular vectors is below ``tolerance``) only if it is a linear
combination of the rows. DAGER tests every possible row:

1. Layer 1: the first block's query/key/value map (``blocks.0.qkv``) sees
   z = LayerNorm(token embedding + position embedding). A token v is in the batch iff
   z(v, p) is in the span for some position p. The position is not identified for B > 1:
   embeddings add, so E[v] + P[p] is a combination of rows whenever v and p occur in the
   batch (E[v] + P[t] − E[w] + … ); at B = 1 the per-position check is exact and is the
   answer.
2. Layer 2: sequences are grown token by token from that token set. A prefix extended by a
   candidate token gives (the blocks are causal) the second block's input row at that
   position, computed by running the first block; the attention and MLP make it a
   non-linear function of the prefix, in the span of ``blocks.1.qkv``'s gradient iff the
   prefix is one of the batch's (up to numerical coincidence).

Exact while B·L < d; when B·L ≥ d the span is the whole space, every candidate passes, and
the record says so (``bound_exceeded``). With one block, sequences cannot be checked at a
second layer: a batch above 1 is then assembled by residual rank at each position.
"""

from __future__ import annotations

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


def residual(z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """‖z − proj(z)‖ / ‖z‖ for each row of ``z`` (…×d) against the span of ``basis``."""
    z = z.double()
    proj = (z @ basis) @ basis.T
    return (z - proj).norm(dim=-1) / z.norm(dim=-1).clamp_min(1e-30)


@register_attack("dager")
class Dager(Attack):
    """Span checks of the first two attention layers' gradients: the batch's tokens per
    position, then its sequences by greedy extension (exact while batch × length < width)."""

    paper = ("Petrov, Dimitrov, Baader, Müller, Vechev. DAGER: Exact Gradient Inversion for "
             "Large Language Models. NeurIPS 2024")
    modalities = frozenset({"text"})
    params = (
        Param("tolerance", float, 5e-3, low=0.0, high=1.0,
              help="largest relative residual of a row counted as in the gradient's span"),
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
        width = model.tok.weight.shape[1]
        cap = min(batch * length, width)
        basis1 = row_basis(grads["blocks.0.qkv.weight"], cap, self.rank_tol)
        info: dict[str, Any] = {"rows": batch * length, "width": width,
                                "bound_exceeded": batch * length >= width,
                                "rank_layer1": basis1.shape[1]}
        with torch.no_grad():
            per_position = self._tokens(model, basis1, batch, length)
            info["tokens_per_position"] = [len(t) for t in per_position]
            if batch == 1 or len(model.blocks) < 2:
                seqs = self._by_rank(per_position, batch)
                info["ordering"] = "one sequence" if batch == 1 else "residual rank (one block)"
            else:
                basis2 = row_basis(grads["blocks.1.qkv.weight"], cap, self.rank_tol)
                info["rank_layer2"] = basis2.shape[1]
                found = self._token_set(per_position, cap)
                info["token_set"] = len(found)
                seqs = self._extend(model, basis2, found, length, batch, obs.device)
                info["ordering"] = "layer-2 span check"
        info["sequences_found"] = len({tuple(s) for s in seqs})
        data = torch.tensor(seqs, dtype=torch.long)
        return Reconstruction(data=data, iterations=0, grad_evals=0, info=info)

    def _tokens(self, model: nn.Module, basis: torch.Tensor, batch: int, length: int
                ) -> list[list[tuple[float, int]]]:
        """Per position, (residual, token) of the tokens in the span, best first: at least
        the best one, at most B·L (the answer at B = 1 and the one-block fallback read the
        first ones; the token set at B > 1 reads them all)."""
        emb = model.tok.weight
        out = []
        for p in range(length):
            z = model.blocks[0].ln1(emb + model.pos.weight[p])
            res = residual(z, basis)
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

    def _extend(self, model: nn.Module, basis: torch.Tensor, found: list[int], length: int,
                batch: int, device: torch.device) -> list[list[int]]:
        """Greedy extension: each prefix × each token of the set, kept when the second
        block's input row at the new position is in the span (at most ``batch``, best
        first; at least the best one)."""
        prefixes: list[list[int]] = [[]]
        for p in range(length):
            cands = [seq + [t] for seq in prefixes for t in found]
            ids = torch.tensor(cands, dtype=torch.long, device=device)
            h = model.blocks[0](model.inputs(ids))
            res = residual(model.blocks[1].ln1(h[:, p]), basis).cpu()
            order = torch.argsort(res)[:batch].tolist()
            keep = [i for i in order if res[i] <= self.tolerance] or order[:1]
            prefixes = [cands[i] for i in keep]
        return self._fill(prefixes, batch)

    @staticmethod
    def _by_rank(per_position: list[list[tuple[float, int]]], batch: int) -> list[list[int]]:
        """Sequence i takes the i-th best token at each position (the last one when fewer)."""
        return [[toks[min(i, len(toks) - 1)][1] for toks in per_position] for i in range(batch)]

    @staticmethod
    def _fill(seqs: list[list[int]], batch: int) -> list[list[int]]:
        """``batch`` sequences: those found, repeated in order when fewer (a batch may hold
        the same sentence twice)."""
        return [seqs[i % len(seqs)] for i in range(batch)]
