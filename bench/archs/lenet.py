"""LeNet of the DLG paper (Zhu et al. 2019): sigmoid activations, uniform(−0.5, 0.5) init."""

from __future__ import annotations

import torch
from torch import nn

from bench.contracts import Arch
from bench.registry import Param, register_arch

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


@register_arch("lenet")
class LeNet(Arch):
    """DLG's LeNet: three 5×5 convs (12 channels) and a linear classifier sized from the input."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019"
    params = (
        Param("activation", str, "sigmoid", choices=tuple(ACTIVATIONS),
              help="sigmoid keeps the model twice differentiable, as DLG requires"),
        Param("width", int, 12, low=1, high=512, help="channels of every conv"),
        Param("init_range", float, 0.5, low=0.0, high=10.0,
              help="weights and biases ~ uniform(-r, r); 0 keeps torch's default init"),
    )

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        act = ACTIVATIONS[self.activation]
        k = self.width
        body = nn.Sequential(
            nn.Conv2d(c, k, 5, padding=2, stride=2), act(),
            nn.Conv2d(k, k, 5, padding=2, stride=2), act(),
            nn.Conv2d(k, k, 5, padding=2, stride=1), act(),
            nn.Flatten(),
        )
        with torch.no_grad():
            features = body(torch.zeros(1, c, h, w)).shape[1]
        return nn.Sequential(*body, nn.Linear(features, num_classes))

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        if self.init_range <= 0:
            return
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * self.init_range
                        - self.init_range)
