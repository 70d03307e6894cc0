"""TAG: Gradient Attack on Transformer-based Language Models (Deng, Wang, Li, Wang, Wang,
Ding, Xu, Zhang. Findings of EMNLP 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from attacks.batched_adam import ADAM_MAX_LR
from attacks.text_matching import optimise_text, text_incompatibility
from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import Param, register_attack


def l2_l1_distance(alpha: float):  # noqa: ANN201 - returns a distance function
    """TAG's distance: Σ ‖∇' − ∇‖² + α Σ |∇' − ∇| over the matched tensors."""

    def distance(dummy: Sequence[torch.Tensor], observed: Sequence[torch.Tensor]
                 ) -> torch.Tensor:
        diffs = [d - o for d, o in zip(dummy, observed)]
        return sum((x * x).sum() for x in diffs) + alpha * sum(x.abs().sum() for x in diffs)

    return distance


@register_attack("tag")
class TAG(Attack):
    """Adam on dummy token embeddings and soft labels, matching gradients in L2 + α·L1, then
    the nearest token at each position."""

    paper = ("Deng et al. TAG: Gradient Attack on Transformer-based Language Models. "
             "Findings of EMNLP 2021")
    modalities = frozenset({"text"})
    params = (
        Param("iterations", int, 300, low=1, high=100_000, help="Adam steps (one evaluation)"),
        Param("lr", float, 0.01, low=0.0, high=ADAM_MAX_LR, help="Adam learning rate"),
        Param("alpha", float, 0.01, low=0.0, help="weight of the L1 term (the paper: 0.01)"),
    )

    def incompatibility(self, ctx: CellContext) -> str | None:
        return text_incompatibility(self.registry_name, ctx)

    def reconstruct(self, obs: Observation) -> Reconstruction:
        return optimise_text(obs, l2_l1_distance(self.alpha), "adam", self.iterations, self.lr)
