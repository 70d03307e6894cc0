"""FCN3 of R-GAP (Zhu & Blaschko, ICLR 2021): 784→1000→100→1, bias-free, LeakyReLU(0.2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.archs.cnn6 import HEAD_PARAM, INIT_PARAM, INIT_STD_PARAM, head, normal_init
from bench.contracts import Arch
from bench.registry import Param, register_arch


@register_arch("fcn3")
class FCN3(Arch):
    """R-GAP's FCN3 on the flat image: bias-free hidden layers (1000, 100) with LeakyReLU(0.2).

    The output is the head's raw logit: R-GAP's code puts a LeakyReLU after the last layer too,
    which a positive logit passes unchanged and a negative one scales by the slope; leakbench's
    heads, as every other architecture's, end at the linear layer."""

    paper = "Zhu & Blaschko. R-GAP: Recursive Gradient Attack on Privacy. ICLR 2021"
    params = (
        HEAD_PARAM, INIT_PARAM, INIT_STD_PARAM,
        Param("hidden1", int, 1000, low=1, high=100_000, help="units of the first hidden layer"),
        Param("hidden2", int, 100, low=1, high=100_000, help="units of the second hidden layer"),
        Param("slope", float, 0.2, low=0.0, high=1.0, help="LeakyReLU negative slope"),
    )

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        features = math.prod(input_shape)
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(features, self.hidden1, bias=False), nn.LeakyReLU(self.slope),
            nn.Linear(self.hidden1, self.hidden2, bias=False), nn.LeakyReLU(self.slope),
            head(self.hidden2, num_classes, self.head),
        )

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        if self.init == "normal":
            normal_init(model, self.init_std, generator)
