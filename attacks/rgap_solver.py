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
a dense constraint matrix, with the unknowns ordered channel-last (h, w, c):

- the gradient constraints never mix input channels, and every channel has the same
  coefficients: ``A_gᵀA_g = BᵀB ⊗ I_C``, where ``BᵀB`` (H·W × H·W) receives ``kᵀk``
  (L×L, L output positions) once per kernel offset;
- ``A_fᵀA_f = Σ_positions S_lᵀ (WᵀW) S_l`` (S_l: the im2col selection of patch l): for
  each pair of kernel offsets, one C×C block of ``WᵀW`` lands on a regular grid of
  position pairs, added through one strided view;
- the right-hand sides are adjoint convolutions (``torch.nn.grad.conv2d_input``).

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.grad import conv2d_input

U_STAR = 1.2784645427610738  # argmin of f(u) = -u/(1+e^u): the root of e^u (u-1) = 1
F_MIN = -U_STAR / (1.0 + math.exp(U_STAR))  # f(U_STAR) ≈ -0.2785


@dataclass
class LayerSolve:
    """A solved layer: its input and the diagnostics of the least-squares system."""

    x: torch.Tensor  # the recovered input, in the layer's input shape (no batch dim)
    info: dict[str, float] = field(default_factory=dict)
    z_pred: torch.Tensor | None = None  # the layer's output predicted from x: W x


# ---------------------------------------------------------------------------------------------
# the top layer: invert w·∇w = μ ℓ'(μ) for the logistic loss


def udldu(u: float) -> float:
    """f(u) = u·ℓ'(u) for the logistic loss written in u = yμ: −u / (1 + e^u)."""
    if u > 700:
        return -u * math.exp(-u)
    return -u / (1.0 + math.exp(u))


def invert_udldu(c: float) -> list[float]:
    """All u with −u/(1+e^u) = c: one root for c ≥ 0, two for F_MIN < c < 0.

    f is decreasing on (−∞, U_STAR) and increasing on (U_STAR, ∞) towards 0⁻, so a positive
    ``c`` has one root (u < 0), a negative one two roots (0 < u₁ < U_STAR < u₂), and a value
    below the minimum (only reachable through noise) is mapped to U_STAR.
    """
    if not math.isfinite(c):
        return [0.0]
    if c <= F_MIN:
        return [U_STAR]
    if c == 0.0:
        return [0.0]
    roots = []
    if c > 0:
        lo, hi = -1.0, 0.0
        while udldu(lo) < c:
            lo *= 2.0
        roots.append(_bisect(lo, hi, c, decreasing=True))
    else:
        roots.append(_bisect(0.0, U_STAR, c, decreasing=True))
        hi = 2.0 * U_STAR
        while udldu(hi) < c:
            hi *= 2.0
            if hi > 1e6:
                break
        roots.append(_bisect(U_STAR, hi, c, decreasing=False))
    return roots


def _bisect(lo: float, hi: float, c: float, decreasing: bool) -> float:
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        above = udldu(mid) > c
        if above == decreasing:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-15 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


# ---------------------------------------------------------------------------------------------
# invertible activations


def inverse_activation(kind: str, y: torch.Tensor, slope: float = 0.0) -> torch.Tensor:
    """σ⁻¹(y) for the supported activations (sigmoid/tanh clamp into their open range)."""
    if kind == "identity":
        return y
    if kind == "leaky_relu":
        return torch.where(y >= 0, y, y / slope)
    if kind == "sigmoid":
        eps = 1e-12
        yc = y.clamp(eps, 1 - eps)
        return torch.log(yc) - torch.log1p(-yc)
    if kind == "tanh":
        return torch.atanh(y.clamp(-1 + 1e-12, 1 - 1e-12))
    raise ValueError(f"no inverse for activation {kind!r}")


def activation_derivative(kind: str, z: torch.Tensor, y: torch.Tensor, slope: float = 0.0
                          ) -> torch.Tensor:
    """σ'(z), given the pre-activation ``z`` and the activation ``y = σ(z)``."""
    if kind == "identity":
        return torch.ones_like(z)
    if kind == "leaky_relu":
        return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, slope))
    if kind == "sigmoid":
        s = torch.sigmoid(z)
        return s * (1 - s)
    if kind == "tanh":
        return 1 - torch.tanh(z) ** 2
    raise ValueError(f"no derivative for activation {kind!r}")


# ---------------------------------------------------------------------------------------------
# Gram matrices of a convolution's constraints
#
# The unknowns are ordered channel-last, (h, w, c), so that the C×C channel block of every
# pair of positions is contiguous in the Gram matrix. Every block is added through one
# strided view per pair of kernel offsets (no index arithmetic): an output position (p, q)
# reads input row p·s + i − pad at kernel offset i, so the pairs of rows (and columns) one
# offset pair touches form a regular grid.


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run many small in-place ops on one CPU thread.

    The Gram assembly is a few hundred small strided additions; with several OpenMP
    threads each one pays a fork/join, which costs far more than the work on a busy
    machine. Restores the thread count afterwards.
    """
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def valid_range(n_out: int, stride: int, offset: int, pad: int, size: int) -> tuple[int, int]:
    """The range [lo, hi) of output positions whose read at ``offset`` is inside the input."""
    lo = max(0, -((offset - pad) // stride))
    hi = min(n_out, (size - 1 + pad - offset) // stride + 1)
    return lo, hi


def _both(n_out: int, stride: int, a: int, b: int, pad: int, size: int) -> tuple[int, int]:
    lo1, hi1 = valid_range(n_out, stride, a, pad, size)
    lo2, hi2 = valid_range(n_out, stride, b, pad, size)
    return max(lo1, lo2), min(hi1, hi2)


def conv_forward_gram(weight: torch.Tensor, in_shape: tuple[int, int, int],
                      stride: tuple[int, int], padding: tuple[int, int],
                      out: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """A_fᵀA_f (n×n, channel-last unknowns) of the forward constraints x ↦ conv2d(x, W).

    ``A_fᵀA_f = Σ_positions S_lᵀ (WᵀW) S_l``: for every pair of kernel offsets (δ, δ') the
    C×C block ``Σ_o W[o,:,δ] W[o,:,δ']ᵀ`` is added at every pair of input positions that
    one output position reads at δ and δ'. Padded positions are left out (they are zero).
    With ``out``, ``scale·A_fᵀA_f`` is added to it in place.
    """
    o, c, kh, kw = weight.shape
    _, h, w = in_shape
    ho, wo = _out_hw(in_shape, (kh, kw), stride, padding)
    n = c * h * w
    blocks = torch.einsum("oaij,obkl->ijklab", weight, weight)  # (kh, kw, kh, kw, C, C)
    if scale != 1.0:
        blocks.mul_(scale)
    gram = torch.zeros(n, n, dtype=weight.dtype, device=weight.device) if out is None else out
    with _one_thread(weight.device):
        _add_forward_blocks(gram, blocks, (ho, wo), in_shape, stride, padding,
                            w * c * (n + 1))
    return gram


def forward_gram_trace(weight: torch.Tensor, in_shape: tuple[int, int, int],
                       stride: tuple[int, int], padding: tuple[int, int]) -> float:
    """trace(A_fᵀA_f) = Σ_δ ‖W[:, :, δ]‖² · (output positions whose read at δ is inside)."""
    kh, kw = weight.shape[-2:]
    _, h, w = in_shape
    ho, wo = _out_hw(in_shape, (kh, kw), stride, padding)
    norms = weight.pow(2).sum(dim=(0, 1))  # (kh, kw)
    rows = [max(0, b - a) for a, b in (valid_range(ho, stride[0], i, padding[0], h)
                                         for i in range(kh))]
    cols = [max(0, b - a) for a, b in (valid_range(wo, stride[1], j, padding[1], w)
                                         for j in range(kw))]
    counts = torch.tensor(rows, dtype=weight.dtype, device=weight.device)[:, None] * \
        torch.tensor(cols, dtype=weight.dtype, device=weight.device)[None, :]
    return float((norms * counts).sum())


def _out_hw(in_shape: tuple[int, int, int], kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> tuple[int, int]:
    return ((in_shape[1] + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (in_shape[2] + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def _add_forward_blocks(gram: torch.Tensor, blocks: torch.Tensor, out_hw: tuple[int, int],
                        in_shape: tuple[int, int, int], stride: tuple[int, int],
                        padding: tuple[int, int], row_stride: int) -> None:
    kh, kw = blocks.shape[0], blocks.shape[1]
    c, h, w = in_shape
    ho, wo = out_hw
    sh, sw = stride
    n = gram.shape[0]
    assert gram.is_contiguous() and gram.shape == (n, n)
    for i in range(kh):
        for i2 in range(kh):
            plo, phi = _both(ho, sh, i, i2, padding[0], h)
            if phi <= plo:
                continue
            for j in range(kw):
                for j2 in range(kw):
                    qlo, qhi = _both(wo, sw, j, j2, padding[1], w)
                    if qhi <= qlo:
                        continue
                    r0, r1 = plo * sh + i - padding[0], plo * sh + i2 - padding[0]
                    c0, c1 = qlo * sw + j - padding[1], qlo * sw + j2 - padding[1]
                    offset = (r0 * w + c0) * c * n + (r1 * w + c1) * c
                    view = gram.as_strided((phi - plo, qhi - qlo, c, c),
                                           (sh * row_stride, sw * c * (n + 1), n, 1), offset)
                    view += blocks[i, j, i2, j2]


def spatial_gradient_gram(k: torch.Tensor, in_hw: tuple[int, int], kernel: tuple[int, int],
                          stride: tuple[int, int], padding: tuple[int, int]) -> torch.Tensor:
    """BᵀB (H·W × H·W): the gradient constraints' Gram for one input channel.

    The gradient of W[:, c, δ] is ``Σ_l k[:, l] x[c, pos(l, δ)]``; for one offset δ the
    positions read by the output grid form a regular grid, and ``kᵀk`` (L×L) is added on it.
    """
    h, w = in_hw
    o = k.shape[0]
    ho, wo = k.shape[-2:]
    hw = h * w
    kmat = k.reshape(o, -1)
    ktk = (kmat.T @ kmat).reshape(ho, wo, ho, wo)
    sp = torch.zeros(hw, hw, dtype=k.dtype, device=k.device)
    sh, sw = stride
    with _one_thread(k.device):
        for i in range(kernel[0]):
            plo, phi = valid_range(ho, sh, i, padding[0], h)
            for j in range(kernel[1]):
                qlo, qhi = valid_range(wo, sw, j, padding[1], w)
                if phi <= plo or qhi <= qlo:
                    continue
                r0, c0 = plo * sh + i - padding[0], qlo * sw + j - padding[1]
                offset = (r0 * w + c0) * hw + r0 * w + c0
                view = sp.as_strided((phi - plo, qhi - qlo, phi - plo, qhi - qlo),
                                     (sh * w * hw, sw * hw, sh * w, sw), offset)
                view += ktk[plo:phi, qlo:qhi, plo:phi, qlo:qhi]
    return sp


def conv_gradient_gram(k: torch.Tensor, in_shape: tuple[int, int, int],
                       kernel: tuple[int, int], stride: tuple[int, int],
                       padding: tuple[int, int], out: torch.Tensor | None = None,
                       scale: float = 1.0, spatial: torch.Tensor | None = None) -> torch.Tensor:
    """A_gᵀA_g (n×n, channel-last unknowns) of the gradient constraints x ↦ ∇W(x).

    The gradient constraints never mix input channels and every channel has the same
    coefficients, so the Gram is BᵀB ⊗ I_C: the spatial block is built once. With ``out``,
    ``scale·A_gᵀA_g`` is added to it in place.
    """
    c, h, w = in_shape
    sp = spatial if spatial is not None else spatial_gradient_gram(k, (h, w), kernel, stride,
                                                                   padding)
    n = c * h * w
    gram = torch.zeros(n, n, dtype=k.dtype, device=k.device) if out is None else out
    gram.view(h * w, c, h * w, c).diagonal(dim1=1, dim2=3).add_(
        (sp * scale)[:, :, None].expand(h * w, h * w, c))
    return gram


def _channel_last(t: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) or (C, H, W) → flat vector in (h, w, c) order."""
    return t.reshape(-1, *t.shape[-2:]).permute(1, 2, 0).reshape(-1)


# ---------------------------------------------------------------------------------------------
# solving


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
        atg = _channel_last(conv2d_input(shape4, grad_w, k[None], stride=stride,
                                         padding=padding))
        rhs += wg * atg
    if use_forward:
        trace = forward_gram_trace(weight, in_shape, stride, padding)
        wf = n / trace if trace > 0 else 0.0
        conv_forward_gram(weight, in_shape, stride, padding, out=gram, scale=wf)
        rhs += wf * _channel_last(conv2d_input(shape4, weight, z[None], stride=stride,
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
