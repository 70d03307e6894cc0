"""What the closed-form attacks (R-GAP, the analytic attack) share.

Both invert one gradient of a model whose structure they parse first: they declare only the
"gradient" update kind (FedAvg's weight deltas mix several local steps), and models outside
that structure are skipped with the parser's own reason.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from bench.contracts import Attack, CellContext, Observation


def sequential_leaves(module: nn.Module) -> list[nn.Module]:
    """The layers of nested ``nn.Sequential`` containers, in order; any other module is a leaf."""
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in sequential_leaves(child)]
    return [module]


class ClosedFormAttack(Attack):
    """Base class: ``parse_model`` returns ``(structure, None)`` or ``(None, reason)``."""

    update_kinds = frozenset({"gradient"})
    counts_iterations = False  # R-GAP's iterations are the layers it inverted

    def parse_model(self, model: nn.Module, input_shape: tuple[int, ...]
                    ) -> tuple[Any | None, str | None]:
        raise NotImplementedError

    def incompatibility(self, ctx: CellContext) -> str | None:
        return self.parse_model(ctx.build_model(), ctx.input_shape)[1]

    def parsed(self, obs: Observation) -> Any:
        """The observed model's structure; raises when the model is outside the attack's scope."""
        structure, reason = self.parse_model(obs.model, obs.input_shape)
        if structure is None:
            raise ValueError(f"{self.registry_name} cannot run on this model: {reason}")
        return structure
