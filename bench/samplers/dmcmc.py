"""Denoising MCMC (Kim & Ye 2022): Langevin–Gibbs chains over (x, σ), then a short denoise."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from bench.registry import Param, register_sampler
from bench.samplers.common import (
    MAX_RHO,
    MAX_SIGMA,
    Sampler,
    gibbs_sweep,
    heun,
    karras_sigmas,
    noise_range_problem,
    schedule_problem,
)
from bench.scoremodel import CountedDenoiser


@register_sampler("dmcmc")
class DenoisingMCMC(Sampler):
    """``chains`` Denoising-Langevin-Gibbs chains in the product space of image and noise level.

    Each chain starts at σ = ``sigma_hi`` from noise, runs ``burn_in`` sweeps (two score
    evaluations each, bench.samplers.common.gibbs_sweep), then yields its state (x, σ) every
    ``thin`` sweeps until n samples are collected. Every state is finished with Heun's
    integrator from its own σ to 0 in ``denoise_steps`` levels (2·denoise_steps − 1
    evaluations). The chains' cost is shared by the samples they yield, which is why the
    paper reaches a given FID with fewer evaluations per sample than integrating from noise.
    """

    paper = ("Kim, Ye. Denoising MCMC for Accelerating Diffusion-Based Generative Models. "
             "ICML 2023 (arXiv 2209.14593)")
    params = (
        Param("chains", int, 16, low=1, high=100_000, help="parallel chains"),
        Param("burn_in", int, 10, low=0, high=100_000, help="sweeps before the first sample"),
        Param("thin", int, 1, low=1, high=10_000, help="sweeps between two samples of a chain"),
        Param("eta", float, 1.0, low=1e-4, high=2.0, help="Langevin step ε = η·σ²"),
        Param("sigma_lo", float, 0.05, low=1e-4, high=MAX_SIGMA,
              help="lowest noise level of a chain"),
        Param("sigma_hi", float, 1.0, low=1e-3, high=MAX_SIGMA,
              help="highest noise level; chains start there"),
        Param("denoise_steps", int, 3, low=1, high=1000,
              help="Heun levels from a chain's σ to 0 (2·steps − 1 evaluations)"),
        Param("probe", bool, True,
              help="estimate the noise level with Tweedie's trace term (2 evaluations a sweep)"),
        Param("sigma_min", float, 0.002, low=1e-5, high=MAX_SIGMA,
              help="the last level before 0"),
        Param("rho", float, 7.0, low=1.0, high=MAX_RHO,
              help="schedule curvature of the denoising"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        return noise_range_problem(config) or schedule_problem(config, "sigma_lo")

    def chain(self, denoiser: CountedDenoiser, n: int, shape: tuple[int, ...],
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The chains' yielded states (x, σ) for ``n`` samples, and every chain's σ per sweep."""
        chains = min(self.chains, n)
        x = torch.randn((chains, *shape), generator=generator) * self.sigma_hi
        sigma = torch.full((chains,), self.sigma_hi)
        trace, xs, sigmas = [sigma], [], []
        per_chain = math.ceil(n / chains)
        for sweep in range(self.burn_in + per_chain * self.thin):
            x, sigma = gibbs_sweep(denoiser, x, sigma, generator, self.eta, self.sigma_lo,
                                   self.sigma_hi, probe=self.probe)
            trace.append(sigma)
            if sweep >= self.burn_in and (sweep - self.burn_in + 1) % self.thin == 0:
                xs.append(x)
                sigmas.append(sigma)
        return torch.cat(xs)[:n], torch.cat(sigmas)[:n], trace

    def sample(self, denoiser: CountedDenoiser, n: int, shape: tuple[int, ...],
               generator: torch.Generator) -> torch.Tensor:
        x, sigma, _ = self.chain(denoiser, n, shape, generator)
        return heun(denoiser, x, karras_sigmas(self.denoise_steps, sigma, self.sigma_min,
                                               self.rho))

    def nfe_per_sample(self, n: int) -> float:
        chains = min(self.chains, n)
        sweeps = self.burn_in + math.ceil(n / chains) * self.thin
        per_sweep = 2 if self.probe else 1
        return chains * sweeps * per_sweep / n + 2 * self.denoise_steps - 1
