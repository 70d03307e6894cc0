"""iDLG: improved Deep Leakage from Gradients (Zhao, Mopuri, Bilen 2020)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attacks.gradient_matching import l2_distance
from attacks.labels import infer_labels, reported_labels
from attacks.lbfgs_trials import (
    LBFGS_PARAMS,
    best_restarts,
    planned_restarts,
    run_trials_lbfgs,
    scores_returned_points,
)
from attacks.trials import TrialEngine
from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import register_attack


@register_attack("idlg")
class IDLG(Attack):
    """The label from the sign of the last layer's gradient (batch 1), then L-BFGS on the image.

    Cells differing only by seed are trials of one vectorised pass (as DLG's)."""

    paper = "Zhao, Mopuri, Bilen. iDLG: Improved Deep Leakage from Gradients. arXiv 2001.02610"
    params = LBFGS_PARAMS
    update_kinds = frozenset({"gradient"})  # matches one gradient; FedAvg is not unrolled
    batched_trials = frozenset({"image"})

    def incompatibility(self, ctx: CellContext) -> str | None:
        """The sign rule reads one sample's label: the observed batch must be 1 (on a
        secure aggregate of K clients the server observes K·B samples)."""
        if ctx.clients > 1 and ctx.batch_size != 1:
            return (f"iDLG's label rule holds only for one sample; the server observes an "
                    f"aggregate of {ctx.clients} clients, {ctx.batch_size} samples")
        if ctx.batch_size != 1:
            return "iDLG's label rule holds only at batch size 1"
        return None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        return self.reconstruct_trials([obs])[0]

    def reconstruct_trials(self, observations: list[Observation]) -> list[Reconstruction]:
        dev = observations[0].device
        r = planned_restarts(self.restarts, observations[0],
                             scoring=scores_returned_points(self.line_search))
        engine = TrialEngine(observations, [c for c in range(len(observations)) for _ in range(r)])
        labels = torch.stack([infer_labels(o).to(dev) for o in observations for _ in range(r)])
        x = torch.stack([torch.randn((1, *o.input_shape), generator=o.generator)
                         for o in observations for _ in range(r)]).to(dev).requires_grad_(True)

        def objective(v: Sequence[torch.Tensor], rows: list[int] | None) -> torch.Tensor:
            return engine.losses(l2_distance, v[0], labels if rows is None else labels[rows],
                                 rows=rows)

        res = run_trials_lbfgs(self, observations, [x], objective, r)
        cells = [o for o in observations for _ in range(r)]
        reported = [reported_labels(o, t) for o, t in zip(cells, labels)]
        return best_restarts(res, x.detach(), reported, len(observations), r)
