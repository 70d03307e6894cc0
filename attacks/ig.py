"""Inverting Gradients (Geiping, Bauermeister, Dröge, Moeller, NeurIPS 2020)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from attacks.batched_adam import ADAM_MAX_LR, TrialsResult, run_signed_adam_trials
from attacks.clocks import RoundClock
from attacks.gradient_matching import (
    cosine_distance,
    dummy_update,
    local_steps,
    plan_budget,
    run_signed_adam,
)
from attacks.labels import labels_for, reported_labels
from attacks.priors import total_variation
from attacks.stopping import Plateau
from attacks.trials import TrialEngine, trials_of
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
        Param("lr", float, 0.1, low=0.0, high=ADAM_MAX_LR,
              help="Adam step size before the decay"),
        Param("tv", float, 0.1, low=0.0,
              help="total-variation weight (reference notebooks: 1e-1; its CLI: 1e-4)"),
        Param("restarts", int, 1, low=1, high=1000, help="independent dummy initialisations"),
        Param("signed", bool, True, help="Adam on the sign of the gradient"),
        Param("lr_decay", bool, True, help="×0.1 at 3/8, 5/8 and 7/8 of the iterations"),
        Param("boxed", bool, True, help="project the image into the valid pixel box"),
        Param("init", str, "randn", choices=("randn", "rand", "zeros"),
              help="dummy init: N(0,1), uniform in the box, or zeros"),
        Param("patience", int, 0, low=0, high=1_000_000, identity="non-default",
              help="stop a trial whose best loss gained < min_rel_improvement over this many "
                   "steps (0: run the whole budget)"),
        Param("min_rel_improvement", float, 1e-3, low=0.0, high=1.0, identity="non-default",
              help="the relative gain that counts as progress for patience"),
        Param("snapshots", int, 4, low=0, high=64, identity=False,
              help="estimates kept during the run (at 1/2^k of the iterations) for the "
                   "quality-versus-compute curve, scored outside the attack"),
    )
    batched_trials = frozenset({"image"})  # cells differing by seed share one pass

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
        return self.reconstruct_trials([obs])[0]

    def labels_for(self, obs: Observation) -> tuple[torch.Tensor, bool]:
        """The granted labels, or those inferred from the update (and whether inferred)."""
        return labels_for(obs)

    def snapshot_points(self, iterations: int) -> list[int]:
        """Iteration counts at which estimates are kept: iterations/2, /4, … (``snapshots``)."""
        return sorted({iterations >> k for k in range(1, self.snapshots + 1)} - {0})

    def reconstruct_trials(self, observations: list[Observation]) -> list[Reconstruction]:
        """Every cell's restarts as trials of one vectorised signed-Adam pass; each cell keeps
        its best restart by its own objective."""
        obs0 = observations[0]
        restarts, iterations = plan_budget(self.restarts, self.iterations, obs0.max_iterations,
                                           obs0.max_grad_evals)
        cell_of = [c for c in range(len(observations)) for _ in range(restarts)]
        engine = TrialEngine(observations, cell_of)
        labelled = [self.labels_for(o) for o in observations]
        target = torch.stack([labelled[c][0] for c in cell_of])
        starts = torch.stack([x for o in observations for x in self.initial_images(o, restarts)])
        priors = self.priors(obs0)

        def objective(x: torch.Tensor) -> torch.Tensor:
            return engine.losses(cosine_distance, x, target, priors)

        def match(x: torch.Tensor) -> torch.Tensor:
            return engine.losses(cosine_distance, x, target)

        def running(x: torch.Tensor, rows: list[int]) -> torch.Tensor:  # once some stopped
            return engine.losses(cosine_distance, x, target[rows], priors, rows=rows)

        res = run_signed_adam_trials(
            starts, objective, iterations, self.lr, self.signed, self.lr_decay,
            obs0.domain.bounds(obs0.device) if self.boxed else None,
            score=objective if self.scores_with_priors() else match,
            plateau=Plateau(self.patience, self.min_rel_improvement),
            snapshot_at=self.snapshot_points(iterations), rows_losses=running)
        return [self._cell_result(res, trials, obs, labels, inferred, iterations)
                for trials, obs, (labels, inferred)
                in zip(trials_of(cell_of, len(observations)), observations, labelled)]

    def _cell_result(self, res: TrialsResult, trials: list[int], obs: Observation,
                     labels: torch.Tensor, inferred: bool, iterations: int) -> Reconstruction:
        """One cell's reconstruction: its best restart, its restarts' summed cost."""
        mine = [res.trials[j] for j in trials]
        finals = [t.final_loss for t in mine]
        diverged = all(t.diverged or t.final_loss == float("inf") for t in mine)
        best = 0 if diverged else min(range(len(mine)), key=lambda r: finals[r])
        winner = mine[best]
        clock, ran = RoundClock(res.round_shares), [t.iterations for t in mine]
        width = max(len(t.loss_trace) for t in mine)
        trace = [min(t.loss_trace[i] for t in mine if i < len(t.loss_trace))
                 for i in range(width)]
        info = {"final_loss": winner.final_loss, "diverged": diverged,
                "restarts_run": len(mine), "iterations_per_restart": iterations,
                "restart_losses": finals, "best_restart": best,
                "labels_inferred": inferred,
                "local_steps": local_steps(obs.client, obs.client_batch_size),
                "update_kind": obs.update.kind,
                # the seconds all its restarts had spent by then; the snapshots' evaluations:
                # the schedule's (the winner's times the restarts, the same for every seed)
                "converged_at": None if winner.converged_at is None else {
                    **winner.converged_at,
                    "seconds": clock.at(winner.converged_at["iterations"], ran)},
                "trial_seconds": sum(t.seconds for t in mine),  # the runner divides a pass
                "snapshots": [(evals * len(mine), clock.at(evals, ran), x)
                              for evals, _, x in winner.snapshots]}
        return Reconstruction(res.images[trials[best]], reported_labels(obs, labels, inferred),
                              sum(t.iterations for t in mine), sum(t.grad_evals for t in mine),
                              trace, info)

    def reconstruct_sequential(self, obs: Observation) -> Reconstruction:
        """The restarts one by one (an attack whose objective couples them: GradInversion's
        group consistency, its BatchNorm hooks)."""
        dev = obs.device
        labels, inferred = self.labels_for(obs)
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
        return Reconstruction(res.images, reported_labels(obs, labels, inferred), res.iterations,
                              res.grad_evals,
                              res.loss_trace, info)
