"""DLG: Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attacks.gradient_matching import l2_distance
from attacks.labels import reported_labels
from attacks.lbfgs_trials import (
    LBFGS_PARAMS,
    best_restarts,
    line_search_fn,
    planned_restarts,
    run_trials_lbfgs,
    scores_returned_points,
)
from attacks.stopping import Plateau
from attacks.text_matching import best_text_restart, optimise_text, text_incompatibility
from attacks.trials import TrialEngine
from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import register_attack


@register_attack("dlg")
class DLG(Attack):
    """L-BFGS on a dummy image and dummy soft-label logits, matching gradients in squared L2.

    Cells differing only by seed are trials of one vectorised pass, each with its own L-BFGS
    state (see :mod:`attacks.batched_lbfgs`). On text (the paper's Sec. 4.2) the dummies are
    token embeddings, projected to the nearest tokens at the end
    (:mod:`attacks.text_matching`), one cell at a time, with the same steps, caps,
    ``patience`` and ``restarts``."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019"
    params = LBFGS_PARAMS
    update_kinds = frozenset({"gradient"})  # matches one gradient; FedAvg is not unrolled
    batched_trials = frozenset({"image"})  # text cells: one optimisation each
    modalities = frozenset({"image", "text"})

    def incompatibility(self, ctx: CellContext) -> str | None:
        return text_incompatibility(self.registry_name, ctx) if ctx.modality == "text" else None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        return self.reconstruct_trials([obs])[0]

    def reconstruct_trials(self, observations: list[Observation]) -> list[Reconstruction]:
        if observations[0].domain.kind == "tokens":
            plateau = Plateau(self.patience, self.min_rel_improvement)

            def optimise(o: Observation, score_end: bool) -> Reconstruction:
                return optimise_text(o, l2_distance, "lbfgs", self.steps, self.lr,
                                     self.max_eval_per_step, self.history_size,
                                     line_search_fn(self.line_search), plateau, score_end)

            return [best_text_restart(o, planned_restarts(self.restarts, o, scoring=True),
                                      optimise) for o in observations]
        restarts = planned_restarts(self.restarts, observations[0],
                                    scoring=scores_returned_points(self.line_search))
        cell_of = [c for c in range(len(observations)) for _ in range(restarts)]
        engine = TrialEngine(observations, cell_of)  # refuses before any dummy is drawn
        starts, logits = [], []
        for obs in observations:  # each cell's own dummies, drawn as a lone run draws them
            g = obs.generator
            for _ in range(restarts):
                starts.append(torch.randn((obs.batch_size, *obs.input_shape), generator=g))
                logits.append(torch.randn(obs.batch_size, obs.num_classes, generator=g))
        dev = observations[0].device
        x = torch.stack(starts).to(dev).requires_grad_(True)
        y = torch.stack(logits).to(dev).requires_grad_(True)

        def objective(v: Sequence[torch.Tensor], rows: list[int] | None) -> torch.Tensor:
            return engine.losses(l2_distance, v[0], v[1].softmax(dim=-1), rows=rows)

        res = run_trials_lbfgs(self, observations, [x, y], objective, restarts)
        cells = [o for o in observations for _ in range(restarts)]
        labels = [reported_labels(o, t.argmax(dim=-1)) for o, t in zip(cells, y.detach())]
        return best_restarts(res, x.detach(), labels, len(observations), restarts)
