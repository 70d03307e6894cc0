"""The Gram matrices of R-GAP's convolution constraints (Zhu & Blaschko, ICLR 2021).

The least-squares solve (:mod:`attacks.rgap_solver`) works on the normal equations; their
Gram matrices are assembled here from the convolution's structure, never from a dense
constraint matrix, with the unknowns ordered channel-last (h, w, c) and the padded entries
of the input left out (they are zero):

- the gradient constraints never mix input channels, and every channel has the same
  coefficients: ``A_gᵀA_g = BᵀB ⊗ I_C``, where ``BᵀB`` (H·W × H·W) receives ``kᵀk``
  (L×L, L output positions) once per kernel offset;
- ``A_fᵀA_f = Σ_positions S_lᵀ (WᵀW) S_l`` (S_l: the im2col selection of patch l): for
  each pair of kernel offsets, one C×C block of ``WᵀW`` lands on a regular grid of
  position pairs, added through one strided view.

Nothing here imports leakbench: the functions take tensors and return tensors.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

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


def channel_last(t: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) or (C, H, W) → flat vector in (h, w, c) order."""
    return t.reshape(-1, *t.shape[-2:]).permute(1, 2, 0).reshape(-1)
