"""The span checks DAGER builds on: a linear layer's weight gradient is Σₜ δₜ zₜᵀ over the
input rows zₜ it saw, so its row space is spanned by them (Petrov et al., DAGER, NeurIPS 2024).
Bases of gradients' row spaces, residuals against them, and the rows each layer of leakbench's
transformer sees for given sequences."""

from __future__ import annotations

import torch
from torch import nn


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
