"""BatchNorm in training mode, written in primitive operations, for the batched-trials engine.

torch's ``vmap`` batching rule for the backward of an affine ``batch_norm`` in training mode
returns a wrong gradient with respect to the input (pytorch/functorch#534): under
``vmap(grad(...))`` a gradient-matching loss through a BatchNorm layer keeps its value but
gets a biased gradient with respect to the dummy images (relative error ~3e-3 for
``BatchNorm2d``, the gradient's size itself for ``BatchNorm1d``). Written as a mean, a
variance and an affine map, the same layer differentiates correctly under ``vmap``, so K trials
of a BatchNorm network in one pass stay each exactly its own problem.

The engine swaps these in for every BatchNorm layer when the client normalises with batch
statistics (``bn_mode: train``), for a lone trial too, so that one trial alone and inside a
batch run the same arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn


class BatchStatsNorm(nn.Module):
    """``BatchNorm{1,2,3}d`` in training mode: normalise by the batch's own mean and biased
    variance over every dimension but the channel one, then the layer's affine map. No running
    statistics are kept (the engine's model never updates them)."""

    def __init__(self, source: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = source.eps
        self.weight = source.weight  # the same Parameters: names and order are unchanged
        self.bias = source.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
        y = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is None:
            return y
        shape = [1, -1] + [1] * (x.dim() - 2)
        return y * self.weight.view(shape) + self.bias.view(shape)


def use_batch_statistics(model: nn.Module) -> None:
    """Replace, in place, every BatchNorm layer of ``model`` by a :class:`BatchStatsNorm`."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(model, name, BatchStatsNorm(child))
        else:
            use_batch_statistics(child)
