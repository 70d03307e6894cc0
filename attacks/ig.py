"""Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attacks.gradient_matching import (
    cosine_distance,
    dummy_update,
    local_steps,
    plan_budget,
    run_signed_adam,
)
from attacks.labels import infer_labels
from attacks.priors import total_variation
from bench.contracts import Attack, Observation, Reconstruction
from bench.grants import LABELS
from bench.registry import Param, register_attack

Objective = Callable[[torch.Tensor], torch.Tensor]


@register_attack("ig")
class InvertingGradients(Attack):
    """Signed Adam on 1 − cosine similarity of all gradients plus TV, boxed, best of restarts.

    The objective is one minus the cosine similarity between the dummy batch's update and
    the observed one, all layers concatenated, plus ``tv`` times the anisotropic total
    variation. The image is optimised by Adam on the sign of its gradient, with the
    learning rate dropped ×0.1 at 3/8, 5/8 and 7/8 of the iterations, projected into the
    valid pixel box after every step. Restarts are ranked by the matching loss alone, as
    in the reference code. Labels are ``obs.grant(LABELS)`` when granted, otherwise inferred
    (iDLG's rule at batch 1, counts from the last layer's gradient above).

    FedAvg: the client's local SGD is unrolled on the dummy batch (Dimitrov et al. 2022)
    and the resulting weight delta is matched instead of a gradient.

    Budget: the paper runs 4 800 iterations (24 000 with several restarts for its
    ImageNet showcase); the default of 200 keeps a cell affordable on CPU, and a suite
    can set ``iterations: 4800``. The schedule's milestones scale with the iterations
    actually run, including when a suite's ``budget`` caps them.
    """

    paper = ("Geiping, Bauermeister, Dröge, Moeller. Inverting Gradients — How easy is it to "
             "break privacy in federated learning? NeurIPS 2020")
    update_kinds = frozenset({"gradient", "delta"})  # FedAvg: the local steps are unrolled
    wants = frozenset({LABELS})  # the true labels when the suite grants them, else inferred
    params = (
        Param("iterations", int, 200, low=0, high=1_000_000,
              help="Adam steps per restart (paper: 4800; 24000 in its ImageNet showcase)"),
        Param("lr", float, 0.1, low=0.0, help="Adam step size before the decay"),
        Param("tv", float, 0.1, low=0.0,
              help="total-variation weight (reference notebooks: 1e-1; its CLI: 1e-4)"),
        Param("restarts", int, 1, low=1, high=1000, help="independent dummy initialisations"),
        Param("signed", bool, True, help="Adam on the sign of the gradient"),
        Param("lr_decay", bool, True, help="×0.1 at 3/8, 5/8 and 7/8 of the iterations"),
        Param("boxed", bool, True, help="project the image into the valid pixel box"),
        Param("init", str, "randn", choices=("randn", "rand", "zeros"),
              help="dummy init: N(0,1), uniform in the box, or zeros"),
    )

    # -- pieces a subclass (GradInversion) extends -------------------------------------------

    def priors(self, obs: Observation) -> list[Objective]:
        """Image priors added to the matching loss."""
        return [lambda x: self.tv * total_variation(x)] if self.tv > 0 else []

    def group_term(self, obs: Observation) -> Callable[[torch.Tensor, list[torch.Tensor]],
                                                  torch.Tensor] | None:
        return None

    def scores_with_priors(self) -> bool:
        """Whether restarts are ranked by the whole objective (else by the matching loss)."""
        return False

    # -- the attack --------------------------------------------------------------------------

    def initial_images(self, obs: Observation, restarts: int) -> list[torch.Tensor]:
        shape = (obs.batch_size, *obs.input_shape)
        lo, hi = obs.domain.bounds(obs.device)
        starts = []
        for _ in range(restarts):
            if self.init == "randn":
                x = torch.randn(shape, generator=obs.generator).to(obs.device)
            elif self.init == "rand":
                u = torch.rand(shape, generator=obs.generator).to(obs.device)
                x = lo + (hi - lo) * u
            else:
                x = torch.zeros(shape, device=obs.device)
            starts.append(x)
        return starts

    def reconstruct(self, obs: Observation) -> Reconstruction:
        dev = obs.device
        granted = obs.grant(LABELS)
        inferred = granted is None
        labels = (infer_labels(obs) if inferred else granted).to(dev)
        observed = [t.to(dev) for t in obs.update.tensors]
        priors = self.priors(obs)

        def match(x: torch.Tensor) -> torch.Tensor:
            return cosine_distance(dummy_update(obs.model, x, labels, obs), observed)

        def objective(x: torch.Tensor) -> torch.Tensor:
            loss = match(x)
            for prior in priors:
                loss = loss + prior(x)
            return loss

        restarts, iterations = plan_budget(self.restarts, self.iterations, obs.max_iterations,
                                           obs.max_grad_evals)
        res = run_signed_adam(
            self.initial_images(obs, restarts), objective, iterations, self.lr, self.signed,
            self.lr_decay, obs.domain.bounds(obs.device) if self.boxed else None,
            score=objective if self.scores_with_priors() else match, group=self.group_term(obs))
        info = {"final_loss": res.final_loss, "diverged": res.diverged,
                "restarts_run": res.restarts, "iterations_per_restart": res.iterations_per_restart,
                "restart_losses": res.restart_losses, "best_restart": res.best_restart,
                "labels_inferred": inferred,
                "local_steps": local_steps(obs.client, obs.client_batch_size),
                "update_kind": obs.update.kind}
        return Reconstruction(res.images, labels.cpu(), res.iterations, res.grad_evals,
                              res.loss_trace, info)
