"""ConvNet of Inverting Gradients (Geiping et al. 2020): eight 3×3 convs with BatchNorm and ReLU."""

from __future__ import annotations

from torch import nn

from bench.contracts import Arch
from bench.registry import Param, register_arch


@register_arch("convnet")
class ConvNet(Arch):
    """Geiping's ConvNet: 8 conv-BN-ReLU blocks (widths w,2w,2w,4w×5), two 3×3 max-pools, linear.

    The layout follows the ``ConvNet`` of the inverting-gradients code: convs of width
    w → 2w → 2w → 4w → 4w → 4w, a 3×3 max-pool, two more 4w convs, a second 3×3 max-pool
    and a linear layer sized from the input (36·w features at 32×32). The paper's model
    has width 64; the default here is 16 so that a cell stays affordable on CPU.
    """

    paper = ("Geiping, Bauermeister, Dröge, Moeller. Inverting Gradients — How easy is it to "
             "break privacy in federated learning? NeurIPS 2020")
    params = (
        Param("width", int, 16, low=1, high=512, help="base width w (the paper uses 64)"),
        Param("batchnorm", bool, True, help="BatchNorm after every conv (the paper's ConvNet)"),
    )

    def build(self, input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
        c, h, w = input_shape
        k = self.width
        widths = [k, 2 * k, 2 * k, 4 * k, 4 * k, 4 * k, "pool", 4 * k, 4 * k, "pool"]
        layers: list[nn.Module] = []
        channels = c
        for item in widths:
            if item == "pool":
                layers.append(nn.MaxPool2d(3))
                continue
            layers.append(nn.Conv2d(channels, item, 3, padding=1))
            if self.batchnorm:
                layers.append(nn.BatchNorm2d(item))
            layers.append(nn.ReLU())
            channels = item
        layers.append(nn.Flatten())
        if min(h, w) < 9:
            raise ValueError(f"convnet needs inputs of at least 9×9 (two 3×3 pools), got {h}×{w}")
        features = channels * (h // 3 // 3) * (w // 3 // 3)  # each MaxPool2d(3) floors h/3
        return nn.Sequential(*layers, nn.Linear(features, num_classes))
