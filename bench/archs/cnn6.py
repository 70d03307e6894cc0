"""CNN6 and CNN6-d of R-GAP (Zhu & Blaschko, ICLR 2021): bias-free convs with LeakyReLU(0.2)."""

from __future__ import annotations

import math

import torch
from torch import nn

from bench.contracts import Arch
from bench.registry import Param, register_arch

# (out_channels, kernel, stride, padding) of the six convolutions, as in the paper's code
CNN6_CONVS = ((12, 4, 2, 2), (36, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1),
              (128, 3, 1, 1))
# CNN6-d: the second and third convs narrowed to 20 and 36 channels (the rank-deficient variant)
CNN6D_CONVS = ((12, 4, 2, 2), (20, 3, 2, 1), (36, 3, 1, 1), (36, 3, 1, 1), (64, 3, 2, 1),
               (128, 3, 1, 1))

HEAD_PARAM = Param(
    "head", str, "logit", choices=("logit", "linear"),
    help="logit: one bias-free output trained with the logistic loss (the paper's setting); "
         "linear: num_classes outputs with bias, trained with cross-entropy")
INIT_PARAM = Param(
    "init", str, "default", choices=("default", "normal"),
    help="default: torch's init, as the paper's code (kaiming-uniform, a=√5); "
         "normal: every weight ~ N(0, init_std²), the paper's Appendix C setting")
INIT_STD_PARAM = Param("init_std", float, 0.01, low=0.0, high=10.0,
                       help="standard deviation of the normal init")


def head(features: int, num_classes: int, kind: str) -> nn.Linear:
    """R-GAP's top layer: a bias-free single logit, or a biased multi-class linear layer."""
    if kind == "logit":
        return nn.Linear(features, 1, bias=False)
    return nn.Linear(features, num_classes, bias=True)


def normal_init(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Weights ~ N(0, std²), biases zero: the init of the paper's noise study (Appendix C)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=generator) * std)
                if m.bias is not None:
                    m.bias.zero_()


class _CNN6Base(Arch):
    convs: tuple[tuple[int, int, int, int], ...] = CNN6_CONVS
    params = (HEAD_PARAM, INIT_PARAM, INIT_STD_PARAM,
              Param("slope", float, 0.2, low=0.0, high=1.0,
                    help="LeakyReLU negative slope (0 gives ReLU, which R-GAP cannot invert)"))

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        layers: list[nn.Module] = []
        for out, k, s, p in self.convs:
            layers += [nn.Conv2d(c, out, k, stride=s, padding=p, bias=False),
                       nn.LeakyReLU(self.slope)]
            c = out
            h = math.floor((h + 2 * p - k) / s) + 1
            w = math.floor((w + 2 * p - k) / s) + 1
        if h < 1 or w < 1:
            raise ValueError(f"input {input_shape} is too small for {self.registry_name}")
        layers += [nn.Flatten(), head(c * h * w, num_classes, self.head)]
        return nn.Sequential(*layers)

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        if self.init == "normal":
            normal_init(model, self.init_std, generator)


@register_arch("cnn6")
class CNN6(_CNN6Base):
    """R-GAP's CNN6: six bias-free convs with LeakyReLU(0.2), a linear head sized from the input."""

    paper = "Zhu & Blaschko. R-GAP: Recursive Gradient Attack on Privacy. ICLR 2021"
    convs = CNN6_CONVS


@register_arch("cnn6d")
class CNN6d(_CNN6Base):
    """R-GAP's CNN6-d: CNN6 with the 2nd/3rd convs narrowed to 20/36 channels (rank-deficient)."""

    paper = "Zhu & Blaschko. R-GAP: Recursive Gradient Attack on Privacy. ICLR 2021"
    convs = CNN6D_CONVS
