"""Sampling from pure noise with Karras et al.'s Heun integrator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from bench.registry import Param, register_sampler
from bench.samplers.common import (
    MAX_RHO,
    MAX_SIGMA,
    Sampler,
    heun,
    karras_sigmas,
    schedule_problem,
)
from bench.scoremodel import CountedDenoiser


@register_sampler("heun")
class HeunFromNoise(Sampler):
    """x ~ N(0, σ_max² I), then the probability-flow ODE to σ = 0 by Heun's method.

    The baseline DMCMC accelerates: its cost is 2·steps − 1 score evaluations per sample.
    """

    paper = ("Karras, Aittala, Aila, Laine. Elucidating the Design Space of Diffusion-Based "
             "Generative Models. NeurIPS 2022 (Algorithm 1)")
    params = (
        Param("steps", int, 18, low=1, high=1000, help="noise levels (NFE = 2·steps − 1)"),
        Param("sigma_max", float, 20.0, low=1e-3, high=MAX_SIGMA, help="the starting noise level"),
        Param("sigma_min", float, 0.002, low=1e-5, high=MAX_SIGMA,
              help="the last level before 0"),
        Param("rho", float, 7.0, low=1.0, high=MAX_RHO, help="schedule curvature (EDM: 7)"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        return schedule_problem(config, "sigma_max")

    def sample(self, denoiser: CountedDenoiser, n: int, shape: tuple[int, ...],
               generator: torch.Generator) -> torch.Tensor:
        x = torch.randn((n, *shape), generator=generator) * self.sigma_max
        return heun(denoiser, x, karras_sigmas(self.steps, self.sigma_max, self.sigma_min,
                                               self.rho))

    def nfe_per_sample(self, n: int) -> float:
        return float(2 * self.steps - 1)
