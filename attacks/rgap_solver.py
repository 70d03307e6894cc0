"""The linear algebra of R-GAP (Zhu & Blaschko, ICLR 2021): one layer's least-squares solve.

For one layer with input ``x`` (the unknown), weight ``W``, the observed weight gradient
``∇W`` and the gradient ``k`` of the loss with respect to the layer's pre-activation output
(carried down from the layer above), R-GAP stacks

- gradient constraints: ``∇W = Σ_positions k · (input patch)`` — linear in ``x``;
- forward constraints: ``W x = z``, where ``z = σ⁻¹(input of the layer above)``;
- padding constraints: padded entries of the input are zero.

and solves them in the least-squares sense. Here the padding constraints are imposed
exactly by leaving the padded entries out of the unknowns, and the system is solved
through its normal equations ``(w_g·A_gᵀA_g + w_f·A_fᵀA_f) x = w_g·A_gᵀ∇W + w_f·A_fᵀz``
in float64. The Gram matrices are assembled from the convolution's structure, never from
a dense constraint matrix (:mod:`attacks.rgap_gram`), and the right-hand sides are adjoint
convolutions (``torch.nn.grad.conv2d_input``).

The weights ``w_g``, ``w_f`` bring each block to unit mean diagonal, so that neither the
gradient constraints (whose scale is the tiny ``k``) nor the forward ones dominate when the
data are noisy. The n×n system is factored by Cholesky in float32 and refined in float64
until its float64 residual stops shrinking (mixed-precision iterative refinement), with a
float64 Cholesky and then an eigen-decomposition (pseudo-inverse) as fallbacks for
ill-conditioned or rank-deficient layers; a tiny relative ridge keeps the factorisation
defined.

Nothing here imports leakbench: the functions take tensors and return tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

from attacks.rgap_gram import (
    channel_last,
    conv_forward_gram,
    conv_gradient_gram,
    forward_gram_trace,
    spatial_gradient_gram,
)


@dataclass
class LayerSolve:
    """A solved layer: its input and the diagnostics of the least-squares system."""

    x: torch.Tensor  # the recovered input, in the layer's input shape (no batch dim)
    info: dict[str, float] = field(default_factory=dict)
    z_pred: torch.Tensor | None = None  # the layer's output predicted from x: W x


def solve_normal(gram: torch.Tensor, rhs: torch.Tensor, ridge: float, refine_tol: float = 1e-11,
                 max_refine: int = 30) -> tuple[torch.Tensor, dict[str, float]]:
    """Solve (G + λ·mean(diag G)·I) x = r in float64.

    Mixed-precision iterative refinement: G is factored by Cholesky in float32 (about
    twice as fast as float64) and the float64 residual r − Gx is corrected until it stops
    shrinking, which converges to the float64 solution whenever cond(G)·2⁻²⁴ < 1. If the
    float32 factor fails or refinement stalls above ``refine_tol``, a float64 Cholesky is
    used, and an eigen-decomposition (pseudo-inverse) if G is numerically singular.
    ``gram`` is modified in place (the ridge is added to its diagonal).
    """
    n = gram.shape[0]
    scale = float(gram.diagonal().mean()) if n else 1.0
    scale = scale if scale > 0 else 1.0
    gram.diagonal().add_(ridge * scale)
    bnorm = float(rhs.norm()) or 1.0
    chol32, status = torch.linalg.cholesky_ex(gram.to(torch.float32))
    if int(status) == 0:
        x = torch.zeros_like(rhs)
        r = rhs.clone()
        best = rel = float("inf")
        steps = 0
        while steps < max_refine:
            x += _cholesky_solve(chol32, r.to(torch.float32)).to(rhs.dtype)
            steps += 1
            r = rhs - gram @ x
            rel = float(r.norm()) / bnorm
            if rel <= refine_tol or rel >= 0.5 * best:
                break
            best = rel
        if rel <= max(refine_tol, 1e-9):
            return x, {"solver": 0.0, "cond_estimate": _cond_from_chol(chol32),
                       "refinements": float(steps), "normal_residual": rel}
    del chol32
    chol, status = torch.linalg.cholesky_ex(gram)
    if int(status) == 0:
        x = _cholesky_solve(chol, rhs)
        rel = float((rhs - gram @ x).norm()) / bnorm
        return x, {"solver": 1.0, "cond_estimate": _cond_from_chol(chol), "normal_residual": rel}
    del chol
    gram.diagonal().sub_(ridge * scale)
    evals, evecs = torch.linalg.eigh(gram)
    cutoff = max(ridge, 1e-13) * float(evals.abs().max())
    keep = evals > cutoff
    inv = torch.where(keep, 1.0 / evals.clamp_min(cutoff), torch.zeros_like(evals))
    x = evecs @ (inv * (evecs.T @ rhs))
    cond = float(evals.max() / evals[keep].min()) if bool(keep.any()) else float("inf")
    return x, {"solver": 2.0, "cond_estimate": cond, "rank": float(keep.sum()),
               "rank_deficit": float(n - keep.sum())}


def _cond_from_chol(chol: torch.Tensor) -> float:
    """A cheap lower estimate of cond(G) from its Cholesky factor's diagonal."""
    d = chol.diagonal().to(torch.float64)
    return float((d.max() / d.min().clamp_min(1e-300)) ** 2)


def _cholesky_solve(chol: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """x with L Lᵀ x = r. On the CPU through LAPACK's potrs (scipy): torch's triangular solves
    with one right-hand side are an order of magnitude slower there."""
    if chol.device.type == "cpu":
        import scipy.linalg

        x = scipy.linalg.cho_solve((chol.numpy(), True), rhs.numpy(), check_finite=False)
        return torch.from_numpy(x).to(rhs.dtype)
    return torch.cholesky_solve(rhs[:, None], chol)[:, 0]


def _balance(gram: torch.Tensor) -> float:
    """Weight² that brings a Gram block to unit mean diagonal (0 for an empty block)."""
    m = float(gram.diagonal().mean()) if gram.numel() else 0.0
    return 1.0 / m if m > 0 else 0.0


def solve_conv(weight: torch.Tensor, grad_w: torch.Tensor, k: torch.Tensor,
               z: torch.Tensor | None, in_shape: tuple[int, int, int],
               stride: tuple[int, int], padding: tuple[int, int],
               ridge: float = 1e-10, use_forward: bool = True,
               use_gradient: bool = True) -> LayerSolve:
    """Recover a bias-free Conv2d's input from its gradient (and forward) constraints.

    ``weight``: (O, C, kh, kw); ``grad_w``: its observed gradient; ``k``: (O, Ho, Wo), the
    loss gradient with respect to the conv's output; ``z``: (O, Ho, Wo) the output itself
    (``None`` to drop the forward constraints). All float64 on one device.
    """
    kernel = (weight.shape[-2], weight.shape[-1])
    n = math.prod(in_shape)
    use_forward = use_forward and z is not None
    if not (use_gradient or use_forward):
        raise ValueError("solve_conv needs the gradient or the forward constraints")
    gram = torch.zeros(n, n, dtype=weight.dtype, device=weight.device)
    rhs = torch.zeros(n, dtype=weight.dtype, device=weight.device)
    shape4 = (1, *in_shape)
    wg = wf = 0.0
    atg: torch.Tensor | None = None
    sp: torch.Tensor | None = None
    if use_gradient:  # balance: each block scaled to unit mean diagonal
        sp = spatial_gradient_gram(k, in_shape[1:], kernel, stride, padding)
        trace = in_shape[0] * float(sp.diagonal().sum())
        wg = n / trace if trace > 0 else 0.0
        conv_gradient_gram(k, in_shape, kernel, stride, padding, out=gram, scale=wg, spatial=sp)
        atg = channel_last(conv2d_input(shape4, grad_w, k[None], stride=stride,
                                         padding=padding))
        rhs += wg * atg
    if use_forward:
        trace = forward_gram_trace(weight, in_shape, stride, padding)
        wf = n / trace if trace > 0 else 0.0
        conv_forward_gram(weight, in_shape, stride, padding, out=gram, scale=wf)
        rhs += wf * channel_last(conv2d_input(shape4, weight, z[None], stride=stride,
                                               padding=padding))
    xl, info = solve_normal(gram, rhs, ridge)
    del gram
    x = xl.view(in_shape[1], in_shape[2], in_shape[0]).permute(2, 0, 1).contiguous()
    z_pred = F.conv2d(x[None], weight, stride=stride, padding=padding)[0]
    if z is not None:
        info["residual_forward"] = _rel(z_pred, z)
    if sp is not None and atg is not None:
        # ‖A_g x − ∇W‖² from the normal equations: xᵀ(BᵀB ⊗ I)x − 2xᵀA_gᵀ∇W + ‖∇W‖²
        xm = xl.view(-1, in_shape[0])
        quad = float(((sp @ xm) * xm).sum())
        gg = float(grad_w.pow(2).sum())
        res2 = max(quad - 2 * float(xl @ atg) + gg, 0.0)
        info["residual_gradient"] = math.sqrt(res2 / gg) if gg > 0 else math.sqrt(res2)
    info.update({"unknowns": float(n), "weight_gradient": wg, "weight_forward": wf})
    return LayerSolve(x, info, z_pred)


def solve_linear(weight: torch.Tensor, grad_w: torch.Tensor, k: torch.Tensor,
                 z: torch.Tensor | None, ridge: float = 1e-10, use_forward: bool = True
                 ) -> LayerSolve:
    """Recover a bias-free Linear layer's input: ∇W = k xᵀ and W x = z, in least squares.

    ``weight``, ``grad_w``: (O, n); ``k``, ``z``: (O,).
    """
    n = weight.shape[1]
    kk = float(k @ k)
    wg = 1.0 / kk if kk > 0 else 0.0
    rhs = wg * (grad_w.T @ k)
    wf = 0.0
    if use_forward and z is not None:
        gram = weight.T @ weight
        wf = _balance(gram)
        gram.mul_(wf)
        rhs = rhs + wf * (weight.T @ z)
    else:
        gram = torch.zeros(n, n, dtype=weight.dtype, device=weight.device)
    gram.diagonal().add_(wg * kk)
    x, info = solve_normal(gram, rhs, ridge)
    info.update(linear_residuals(x, weight, grad_w, k, z))
    info.update({"unknowns": float(n), "weight_gradient": wg, "weight_forward": wf})
    return LayerSolve(x, info, weight @ x)


def linear_residuals(x: torch.Tensor, weight: torch.Tensor, grad_w: torch.Tensor,
                     k: torch.Tensor, z: torch.Tensor | None) -> dict[str, float]:
    out = {"residual_gradient": _rel(torch.outer(k, x), grad_w)}
    if z is not None:
        out["residual_forward"] = _rel(weight @ x, z)
    return out


def _rel(pred: torch.Tensor, target: torch.Tensor) -> float:
    den = float(target.norm())
    num = float((pred - target).norm())
    return num / den if den > 0 else num


def conv_input_gradient(weight: torch.Tensor, k: torch.Tensor, in_shape: tuple[int, int, int],
                        stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """Wᵀk for a conv: the loss gradient with respect to the (unpadded) conv input."""
    return conv2d_input((1, *in_shape), weight, k[None], stride=stride, padding=padding)[0]
