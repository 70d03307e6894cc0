"""What every sampler shares: the base class, Karras's σ schedule, the Heun integrator and
one Denoising-Langevin-Gibbs sweep (used by the ``dmcmc`` sampler and attack alike).

All of them work in the score model's space ([−1, 1]) through a
:class:`bench.scoremodel.CountedDenoiser`, which counts every score evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.registry import Component
from bench.scoremodel import CountedDenoiser

# an extra term of the score at (x, D(x, σ), σ): the attack's −λ∇(matching loss)
Extra = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class Sampler(Component):
    """Base class: ``n`` samples of shape ``shape`` in [−1, 1] from a counted denoiser."""

    paper: str = ""

    def sample(self, denoiser: CountedDenoiser, n: int, shape: tuple[int, ...],
               generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def nfe_per_sample(self, n: int) -> float:
        """The score evaluations per sample this sampler spends on ``n`` samples."""
        raise NotImplementedError


MAX_SIGMA = 1e4
"""The highest noise level a chain may start from: far above any image's scale in [0,1] (a
float32 σ of 1e39 overflowed inside the cell, an error record after the suite loaded)."""


def noise_range_problem(config: Any) -> str | None:
    """DMCMC's noise levels must run from ``sigma_lo`` up to ``sigma_hi`` (the chain starts
    at the top); an upside-down range ran and finished "ok"."""
    return below_problem(config, "sigma_lo", "sigma_hi")


def below_problem(config: Any, low: str, high: str) -> str | None:
    """``config[low]`` must lie below ``config[high]``."""
    if config[low] >= config[high]:
        return f"{low} ({config[low]:g}) must be below {high} ({config[high]:g})"
    return None


MAX_RHO = 100.0
"""The schedule's curvature bound: EDM uses 7; past some 1e6 the float32 levels collapse
(ρ = 1e10 made every level 1.0, 1e7 started above σ_max), and ran "ok"."""


def schedule_problem(config: Any, top: str) -> str | None:
    """The denoising schedule must run down from ``config[top]`` to ``sigma_min``: an
    upside-down one collapsed to constant levels and ran "ok"."""
    return below_problem(config, "sigma_min", top)


def karras_sigmas(steps: int, sigma_max: torch.Tensor | float, sigma_min: float, rho: float
                  ) -> torch.Tensor:
    """Karras et al.'s schedule: ``steps`` levels from σ_max to σ_min (ρ-spaced), then 0.

    ``sigma_max`` may hold one starting level per sample: the result is then B×(steps+1).
    """
    top = torch.as_tensor(sigma_max, dtype=torch.float32).reshape(-1, 1)
    ramp = torch.linspace(0, 1, steps).reshape(1, -1) if steps > 1 else torch.zeros(1, 1)
    lo = torch.full_like(top, sigma_min).minimum(top)
    levels = (top ** (1 / rho) + ramp * (lo ** (1 / rho) - top ** (1 / rho))) ** rho
    return torch.cat([levels, torch.zeros(len(top), 1)], dim=1)


def _col(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return v.to(x.dtype).reshape(-1, *[1] * (x.dim() - 1))


def heun(denoiser: CountedDenoiser, x: torch.Tensor, sigmas: torch.Tensor,
         extra: Extra | None = None) -> torch.Tensor:
    """Karras et al.'s deterministic 2nd-order sampler (their Algorithm 1, no churn).

    ``sigmas`` is B×(K+1) (or K+1, shared), ending at 0. It integrates the probability-flow
    ODE dx/dσ = −σ·score(x, σ) with Heun's method, and Euler on the last step to σ = 0:
    2K − 1 score evaluations per sample. ``extra`` adds a term to the score (guidance).
    """
    sigmas = sigmas.reshape(-1, sigmas.shape[-1]).expand(len(x), -1)

    def slope(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        d = denoiser(x, s)
        slope = (x - d) / _col(s, x)
        return slope if extra is None else slope - _col(s, x) * extra(x, d, s)

    for i in range(sigmas.shape[1] - 1):
        s, s_next = sigmas[:, i], sigmas[:, i + 1]
        d = slope(x, s)
        x_next = x + _col(s_next - s, x) * d
        if i < sigmas.shape[1] - 2:  # Heun's correction, except on the final step to 0
            x_next = x + _col(s_next - s, x) * (d + slope(x_next, s_next)) / 2
        x = x_next
    return x


def gibbs_sweep(denoiser: CountedDenoiser, x: torch.Tensor, sigma: torch.Tensor,
                generator: torch.Generator, eta: float, lo: float, hi: float,
                extra: Extra | None = None, probe: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """One Denoising Langevin Gibbs sweep over (x, σ) (Kim & Ye 2022).

    1. σ | x. Write x = x0 + σ·n with n ~ N(0, I_d); given S = ‖x − x0‖² and a Jeffreys
       prior, σ² is inverse-gamma, σ² = S/χ²_d. S is replaced by its expectation given x
       from Tweedie's first two moments, E[S | x] = ‖x − D‖² + σ²·tr ∂D/∂x (D = D(x, σ)),
       the trace by one Rademacher probe of a finite difference (``probe``: a second score
       evaluation; without it, ‖x − D‖² alone, which underestimates σ where the denoiser is
       unsure). The draw is kept within [lo, hi], the chain's range of noise levels.
    2. x | σ. A Langevin step with ε = η·σ² on score(x, σ) ≈ (D − x)/σ² (D reused at the
       new σ, which is close) plus ``extra``. Its noise is scaled by √(1 − η/4), which keeps
       a Gaussian at level σ at σ: the unadjusted step's variance inflation would otherwise
       compound through step 1, one sweep after another.

    Score evaluations per sweep: 2 with ``probe``, else 1.
    """
    d = denoiser(x, sigma)
    dims = x[0].numel()
    spread = ((x - d) ** 2).flatten(1).sum(1)
    if probe:
        v = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1
        delta = 1e-2 * _col(sigma, x)
        div = (v * (denoiser(x + delta * v, sigma) - d) / delta).flatten(1).sum(1)
        spread = spread + sigma.to(x) ** 2 * div.clamp_min(0)
    chi2 = (torch.randn(len(x), dims, generator=generator) ** 2).sum(1).to(x)
    sigma = (spread / chi2).sqrt().clamp(lo, hi)
    s = _col(sigma, x)
    score = (d - x) / s ** 2
    if extra is not None:
        score = score + extra(x, d, sigma)
    eps = eta * s ** 2
    noise = torch.randn(x.shape, generator=generator).to(x)
    return x + eps / 2 * score + (eps * (1 - eta / 4)).sqrt() * noise, sigma
