"""Image priors for the optimisation attacks: total variation, BatchNorm statistics, group.

- :func:`total_variation`: Inverting Gradients' anisotropic TV (Geiping et al. 2020).
- :class:`BNStatsPrior`: GradInversion's BatchNorm-statistics prior (Yin et al. 2021),
  as evaluated by Huang et al. 2021.
- :func:`group_consistency`: GradInversion's group-consistency term over restarts
  (Yin et al. 2021), without the image registration step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bench.client import pooled_bn_stats, set_bn_mode


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of horizontally and vertically adjacent pixels (anisotropic TV).

    Geiping et al. add it to the cosine objective to favour piecewise smooth images.
    """
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean()
    return dx + dy


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def running_stats(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each BatchNorm layer's running (mean, variance): what the model itself carries."""
    stats = []
    for m in batchnorm_layers(model):
        if m.running_mean is None or m.running_var is None:
            raise ValueError("a BatchNorm layer tracks no running statistics")
        stats.append((m.running_mean.detach().clone(), m.running_var.detach().clone()))
    return stats


def untrained_stats(stats: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    """Whether running statistics are BatchNorm's initial values (mean 0, variance 1): those
    of a model that has seen no data, which describe none."""
    return all(bool((m == 0).all()) and bool((v == 1).all()) for m, v in stats)


class BNStatsPrior:
    """Σ over BN layers of ‖μ_l(x̂) − μ_l‖₂ + ‖σ²_l(x̂) − σ²_l‖₂ (Yin et al. 2021, eq. 7).

    ``targets`` are the per-layer (mean, variance) the attacker is granted: the client's
    batch statistics, or the model's running statistics when the client runs BN in eval
    mode. The dummy batch's statistics are those of the inputs that reach each BN layer
    in a forward pass of the whole dummy batch with the client's BN mode, the same
    quantity the client-side hook records, so the two are comparable. With ``groups`` = K
    (a secure aggregate) each client's B samples pass on their own, as each client's did,
    and the K statistics are pooled as the aggregate's are.
    """

    def __init__(self, model: nn.Module, targets: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 bn_mode: str, device: torch.device, groups: int = 1) -> None:
        self.model = model
        self.layers = batchnorm_layers(model)
        if len(self.layers) != len(targets):
            raise ValueError(f"{len(targets)} BN statistics for {len(self.layers)} BN layers")
        self.targets = [(m.to(device), v.to(device)) for m, v in targets]
        self.bn_mode = bn_mode
        self.groups = groups

    def statistics(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per BN layer, the (mean, biased variance) of the dummy batch reaching it."""
        per_group: list[list[tuple[torch.Tensor, torch.Tensor]]] = []

        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor
                 ) -> None:
            h = inputs[0]
            dims = [0] + list(range(2, h.dim()))
            per_group[-1].append((h.mean(dims), h.var(dims, unbiased=False)))

        handles = [m.register_forward_hook(hook) for m in self.layers]
        try:
            set_bn_mode(self.model, self.bn_mode)
            for chunk in x.chunk(self.groups):
                per_group.append([])
                self.model(chunk)
        finally:
            for h in handles:
                h.remove()
        return per_group[0] if len(per_group) == 1 else pooled_bn_stats(per_group)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        loss = x.new_zeros(())
        for (mu, var), (tmu, tvar) in zip(self.statistics(x), self.targets):
            loss = loss + torch.linalg.vector_norm(mu - tmu) + torch.linalg.vector_norm(var - tvar)
        return loss


def group_consistency(x: torch.Tensor, others: Sequence[torch.Tensor]) -> torch.Tensor:
    """‖x − mean of the group‖² per pixel (Yin et al. 2021's R_group, without registration).

    The group mean is treated as a constant, as in the paper's alternating scheme.
    """
    mean = torch.stack([o.detach() for o in others]).mean(0)
    return ((x - mean) ** 2).mean()
