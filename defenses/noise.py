"""Additive noise on the shared update (DLG paper, Sec. 5)."""

from __future__ import annotations

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense


@register_defense("noise")
class Noise(Defense):
    """Add i.i.d. Gaussian or Laplacian noise of standard deviation `scale` to every entry."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019 (Sec. 5)"
    params = (
        Param("scale", float, 1e-3, low=0.0,
              help="standard deviation of the noise (DLG quotes variances: variance = scale²)"),
        Param("distribution", str, "gaussian", choices=("gaussian", "laplace")),
    )

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        g = ctx.generator  # a CPU generator: the same noise on every device
        noisy = []
        for t in update.tensors:
            if self.distribution == "gaussian":
                n = torch.randn(t.shape, generator=g, dtype=t.dtype)
            else:  # Laplace(0, b) has std b·√2: draw with b = scale/√2
                u = torch.rand(t.shape, generator=g, dtype=t.dtype) - 0.5
                # rand can return exactly 0 (u = -0.5, log1p(-1) = -inf): keep |u| < 0.5
                u = u.clamp(-0.5 + torch.finfo(t.dtype).eps, 0.5)
                n = -torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5
            noisy.append(t + self.scale * n.to(t.device))
        out.tensors = noisy
        return out
