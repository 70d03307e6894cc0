"""A fully connected network: the simplest victim, and the one analytic attacks invert exactly."""

from __future__ import annotations

import math

from torch import nn

from bench.archs.lenet import ACTIVATIONS
from bench.contracts import Arch
from bench.registry import Param, register_arch


@register_arch("mlp")
class MLP(Arch):
    """Multi-layer perceptron on the flattened image, with biases."""

    paper = "Phong et al. 2018 (analytic leakage from a biased first linear layer)"
    params = (
        Param("hidden", int, 256, low=1, high=65536, help="units per hidden layer"),
        Param("depth", int, 2, low=1, high=16, help="number of linear layers"),
        Param("activation", str, "sigmoid", choices=tuple(ACTIVATIONS)),
    )

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(input_shape)
        for _ in range(self.depth - 1):
            layers += [nn.Linear(width, self.hidden), ACTIVATIONS[self.activation]()]
            width = self.hidden
        layers.append(nn.Linear(width, num_classes))
        return nn.Sequential(*layers)
