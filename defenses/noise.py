"""Additive noise on the shared update (DLG paper, Sec. 5)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense

DEFAULT_STD = 1e-3


@register_defense("noise")
class Noise(Defense):
    """Add i.i.d. Gaussian or Laplacian noise to every entry, of standard deviation `scale` or
    of variance `variance` (DLG quotes variances); one of the two, 1e-3 std when neither."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019 (Sec. 5)"
    # after secagg it is the aggregate's noise, made inside the protocol from the clients'
    # shares (distributed DP, e.g. Kairouz, Liu, Steinke, ICML 2021), which the server never
    # sees apart
    in_aggregate = True
    params = (
        # both nullable, in a cell's identity only when set: cells that gave `scale` keep
        # the ids they had before `variance` existed
        Param("scale", float, None, low=0.0, nullable=True, identity="non-default",
              help=f"standard deviation of the noise (default {DEFAULT_STD:g})"),
        Param("variance", float, None, low=0.0, nullable=True, identity="non-default",
              help="variance of the noise, as the DLG paper quotes it (std = √variance)"),
        Param("distribution", str, "gaussian", choices=("gaussian", "laplace")),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        if config.get("scale") is not None and config.get("variance") is not None:
            return "give the noise's scale (standard deviation) or its variance, not both"
        return None

    @property
    def std(self) -> float:
        """The standard deviation of every entry's noise."""
        if self.variance is not None:
            return math.sqrt(self.variance)
        return DEFAULT_STD if self.scale is None else self.scale

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        g = ctx.generator  # a CPU generator: the same noise on every device
        std = self.std
        noisy = []
        for t in update.tensors:
            if self.distribution == "gaussian":
                n = torch.randn(t.shape, generator=g, dtype=t.dtype)
            else:  # Laplace(0, b) has std b·√2: draw with b = std/√2
                u = torch.rand(t.shape, generator=g, dtype=t.dtype) - 0.5
                # rand can return exactly 0 (u = -0.5, log1p(-1) = -inf): keep |u| < 0.5
                u = u.clamp(-0.5 + torch.finfo(t.dtype).eps, 0.5)
                n = -torch.sign(u) * torch.log1p(-2 * u.abs()) / 2**0.5
            noisy.append(t + std * n.to(t.device))
        out.tensors = noisy
        return out
