"""The nonlinear steps of R-GAP (Zhu & Blaschko, ICLR 2021): the top logit and the activations.

At the top, a single bias-free logit trained with the logistic loss leaves the scalar
``w·∇w = μ·ℓ'(μ)``: :func:`invert_udldu` finds every logit that explains it. Between layers,
:func:`inverse_activation` turns a recovered input back into the pre-activation output of the
layer below, and :func:`activation_derivative` carries the loss gradient ``k`` down through
the activation.

Nothing here imports leakbench: the functions take floats or tensors and return them.
"""

from __future__ import annotations

import math

import torch

U_STAR = 1.2784645427610738  # argmin of f(u) = -u/(1+e^u): the root of e^u (u-1) = 1
F_MIN = -U_STAR / (1.0 + math.exp(U_STAR))  # f(U_STAR) ≈ -0.2785


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
