"""Label inference from the shared gradient, for attacks that are not granted the labels.

- :func:`idlg_label`: iDLG's rule (Zhao et al. 2020), exact at batch size 1.
"""

from __future__ import annotations

import torch
from torch import nn

from bench.contracts import Observation


def last_linear(model: nn.Module) -> tuple[int, nn.Linear]:
    """Index (into ``model.parameters()``) of the weight of the last linear layer, and the layer."""
    index = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear layer to read labels from")
    layer = linears[-1]
    return index[id(layer.weight)], layer


def idlg_label(obs: Observation) -> torch.Tensor:
    """The class whose row of the last layer's weight gradient has a negative sum.

    With softmax cross-entropy at batch 1 the row for class c is (p_c − y_c)·a; with
    non-negative activations a only the true class gives a negative row.
    """
    i, _ = last_linear(obs.model)
    grad_w = obs.update.tensors[i]
    return grad_w.sum(dim=1).argmin().view(1)
