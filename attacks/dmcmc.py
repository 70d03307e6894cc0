"""Gradient inversion as posterior sampling with a learned prior and Denoising MCMC."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from attacks.gradient_matching import cosine_distance, dummy_update
from attacks.labels import labels_for, reported_labels
from bench.contracts import Attack, CellContext, Dataset, Observation, Reconstruction
from bench.data import normalize
from bench.grants import LABELS, PUBLIC_DATA
from bench.public import public_data
from bench.registry import Param, register_attack
from bench.samplers.common import (
    MAX_SIGMA,
    gibbs_sweep,
    heun,
    karras_sigmas,
    noise_range_problem,
)
from bench.scoremodel import CountedDenoiser, ScoreSettings, from_unit, load_or_train


@register_attack("dmcmc")
class DMCMCInversion(Attack):
    """Samples p(x | g) ∝ p(x)·exp(−λ·D(x)) with Denoising-Langevin-Gibbs sweeps, then denoises.

    p(x) is a score model trained on the public split (bench.scoremodel; cached, so every
    cell of a dataset shares one), D is Inverting Gradients' 1 − cosine similarity between
    the dummy update and the observed one. Each sweep (bench.samplers.common.gibbs_sweep)
    draws the noise level σ given the image, then takes a Langevin step on the image with
    the prior's score plus −λ·∇D, where D and its gradient are taken at the denoised
    estimate D(x, σ) (as in diffusion posterior sampling; no gradient through the score
    network). The chain's last state is finished by Heun's integrator from its σ to 0 with
    the same guided score. Cost: one gradient evaluation per sweep and per guided
    denoising evaluation; the score evaluations are counted apart (``nfe`` in the info).
    A suite's ``max_grad_evals`` caps the sweeps, so budgets compare with ``ig``'s.
    ``lam: 0`` samples the prior alone (a baseline that ignores the update): no gradient is
    evaluated, so none of the budget is spent and only ``max_iterations`` caps the sweeps.
    """

    paper = ("Kim, Ye. Denoising MCMC for Accelerating Diffusion-Based Generative Models. "
             "ICML 2023; as an inversion prior: the issue's posterior p(x)·exp(−λ·D)")
    needs = frozenset({PUBLIC_DATA})
    wants = frozenset({LABELS})
    params = (
        Param("sweeps", int, 200, low=0, high=1_000_000, help="Langevin–Gibbs sweeps"),
        Param("lam", float, 30000.0, low=0.0,
              help="λ: weight of the gradient distance (0: the prior alone)"),
        Param("eta", float, 1.0, low=1e-4, high=2.0, help="Langevin step ε = η·σ²"),
        Param("sigma_lo", float, 0.02, low=1e-4, high=MAX_SIGMA,
              help="lowest noise level of the chain"),
        Param("sigma_hi", float, 0.3, low=1e-3, high=MAX_SIGMA,
              help="highest noise level; the chain starts there"),
        Param("denoise_steps", int, 3, low=1, high=1000,
              help="guided Heun levels from the chain's σ to 0 (2·steps − 1 evaluations)"),
        Param("score_steps", int, 2000, low=1, high=1_000_000,
              help="training steps of the score model (bench.scoremodel)"),
        Param("score_width", int, 16, low=4, high=256, help="the score U-Net's base width"),
        Param("score_seed", int, 0, low=0, high=2 ** 63 - 1,
              help="seed of the score model's training"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        return noise_range_problem(config)

    def incompatibility(self, ctx: CellContext) -> str | None:
        if len(ctx.input_shape) != 3:
            return "dmcmc's score model is for images (C×H×W)"
        return None

    def settings(self) -> ScoreSettings:
        return ScoreSettings(width=self.score_width, steps=self.score_steps)

    def prepare(self, dataset: Dataset, progress: bool = False) -> None:
        """Trains (or finds cached) the score model of ``dataset``'s public split before the
        run's cells: trained inside the first cell, it had counted as that cell's attack time
        and, past the cell's timeout, been killed in every cell, never cached."""
        load_or_train(public_data(dataset), self.settings(), self.score_seed, progress=progress)

    def reconstruct(self, obs: Observation) -> Reconstruction:
        public = obs.grant(PUBLIC_DATA)
        if public is None:
            raise ValueError("dmcmc needs the public_data grant")
        model, _ = load_or_train(public, self.settings(), self.score_seed, progress=False)
        denoiser = CountedDenoiser(model.to(obs.device))
        labels, inferred = labels_for(obs)
        observed = [t.to(obs.device) for t in obs.update.tensors]
        mean, std = obs.domain.mean, obs.domain.std
        evals, trace = 0, []

        def extra(x: torch.Tensor, d: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            nonlocal evals
            x0 = d.detach().clamp(-1, 1).requires_grad_(True)
            loss = cosine_distance(dummy_update(obs.model, normalize(from_unit(x0), mean, std)
                                                .to(obs.device), labels, obs), observed)
            (grad,) = torch.autograd.grad(loss, x0)
            evals += 1
            trace.append(loss.item())
            return -self.lam * grad

        # λ = 0 samples the prior alone: it evaluates no gradient, so spends none of the budget
        guide = extra if self.lam > 0 else None
        budget = obs.max_grad_evals if guide is not None else None
        denoise_steps = self.denoise_steps
        if budget is not None:  # a budget below the finish shortens the finish
            denoise_steps = max(1, min(denoise_steps, (budget + 1) // 2))
        denoise_evals = 2 * denoise_steps - 1
        sweeps = self.sweeps
        if budget is not None:
            sweeps = max(0, min(sweeps, budget - denoise_evals))
        if obs.max_iterations is not None:
            sweeps = min(sweeps, obs.max_iterations)
        gen = obs.generator or torch.Generator()
        shape = (obs.batch_size, *obs.input_shape)
        x = (torch.randn(shape, generator=gen) * self.sigma_hi).to(obs.device)
        sigma = torch.full((obs.batch_size,), self.sigma_hi, device=obs.device)
        sigmas = []
        for _ in range(sweeps):
            x, sigma = gibbs_sweep(denoiser, x, sigma, gen, self.eta, self.sigma_lo,
                                   self.sigma_hi, guide)
            sigmas.append(float(sigma.mean()))
        chain_sigma = sigma.detach().cpu()
        x = heun(denoiser, x, karras_sigmas(denoise_steps, chain_sigma, 0.002, 7.0)
                 .to(obs.device), guide)
        recon = normalize(from_unit(x.detach()).cpu(), mean, std)
        info = {"nfe": denoiser.nfe, "sweeps": sweeps, "sigma_trace": sigmas,
                "chain_sigma": chain_sigma.tolist(), "labels_inferred": inferred,
                "final_loss": trace[-1] if trace else None,
                "score_model": dict(self.settings().__dict__, seed=self.score_seed)}
        return Reconstruction(recon.to(obs.device), reported_labels(obs, labels, inferred),
                              sweeps, evals, trace, info)
