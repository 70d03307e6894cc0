"""CIFAR-style ResNets (He et al. 2016) as used by Inverting Gradients: ResNet-20 and ResNet-18."""

from __future__ import annotations

import torch
from torch import nn

from bench.contracts import Arch
from bench.registry import Param, register_arch

# depth → (blocks per stage): 6n+2 gives the three-stage CIFAR ResNets (ResNet-20 is n = 3),
# 10/18/34 the four-stage BasicBlock ResNets with a 3×3 stem and no stem pooling.
FOUR_STAGE = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
DEPTHS = (8, 10, 14, 18, 20, 26, 32, 34, 44, 56)


def stages(depth: int) -> tuple[int, ...]:
    """Blocks per stage for a depth: (n, n, n) for 6n+2, or the four-stage layouts."""
    if depth in FOUR_STAGE:
        return FOUR_STAGE[depth]
    if (depth - 2) % 6 == 0 and depth >= 8:
        n = (depth - 2) // 6
        return (n, n, n)
    raise ValueError(f"resnet depth {depth} is neither 6n+2 nor one of {sorted(FOUR_STAGE)}")


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 conv-BN) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetModel(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int, blocks: tuple[int, ...]
                 ) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        layers: list[nn.Module] = []
        cin = width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layers(self.stem(x))).flatten(1))


@register_arch("resnet")
class ResNet(Arch):
    """CIFAR-style ResNet: 3×3 stem, BasicBlocks, global average pool, linear (ResNet-20/18)."""

    paper = ("He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016 "
             "(the CIFAR ResNets used by Geiping et al. 2020)")
    params = (
        Param("depth", int, 20, choices=DEPTHS,
              help="6n+2 (8, 14, 20, …: three stages) or 10/18/34 (four stages)"),
        Param("width", int, 16, low=1, high=512,
              help="channels of the first stage, doubled per stage (ResNet-20: 16, ResNet-18: 64)"),
    )

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        return ResNetModel(input_shape[0], num_classes, self.width, stages(self.depth))

    def init_weights(self, model: nn.Module, generator: torch.Generator) -> None:
        """He-normal (fan-out) convs, BN at weight 1 and bias 0, linear at torch's init."""
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu",
                                            generator=generator)
                elif isinstance(m, nn.BatchNorm2d):
                    m.weight.fill_(1.0)
                    m.bias.zero_()
