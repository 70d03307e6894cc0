"""Which models R-GAP can invert (Zhu & Blaschko, ICLR 2021): the model as a chain of stages.

:func:`parse_chain` reads an ``nn.Sequential`` of bias-free ``Conv2d``/``Linear`` layers with
invertible activations, ending in a single bias-free logit or a biased linear layer, into a
:class:`Chain` with every layer's input and output shapes; anything else comes back with
every reason it is out of scope. The attack (:mod:`attacks.rgap`) and its rank analysis
(:mod:`attacks.rgap_rank`) both start from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from attacks.closed_form import sequential_leaves

ACTIVATIONS: dict[type, str] = {nn.LeakyReLU: "leaky_relu", nn.Sigmoid: "sigmoid",
                                nn.Tanh: "tanh"}
NORM_LAYERS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.modules.instancenorm._InstanceNorm, nn.LocalResponseNorm)
POOL_LAYERS = (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool2d,
               nn.AdaptiveMaxPool2d, nn.LPPool2d)
NON_INVERTIBLE = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardtanh, nn.Softplus, nn.ELU,
                  nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Softmax, nn.LogSoftmax)


@dataclass
class Stage:
    """One parametric layer of the chain and the activation that follows it."""

    module: nn.Module
    kind: str  # "conv" | "linear"
    weight_index: int  # into the list of trainable parameters (= the update's tensors)
    bias_index: int | None
    in_shape: tuple[int, ...]  # without the batch dimension
    out_shape: tuple[int, ...]
    act: str = "identity"
    slope: float = 0.0

    @property
    def stride(self) -> tuple[int, int]:
        return tuple(self.module.stride)  # type: ignore[return-value]

    @property
    def padding(self) -> tuple[int, int]:
        return tuple(self.module.padding)  # type: ignore[return-value]


@dataclass
class Chain:
    """A model R-GAP can invert: its stages bottom to top, and the top layer's form."""

    stages: list[Stage]
    top: str  # "logit" (single bias-free output, logistic loss) | "bias" (biased linear top)

    @property
    def homogeneous(self) -> bool:
        """Positively homogeneous (f(s·x) = s·f(x) for s > 0): LeakyReLU/identity, no bias."""
        return all(s.act in ("leaky_relu", "identity") for s in self.stages[:-1])


def parse_chain(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[Chain | None, str | None]:
    """The model as an R-GAP chain, or (None, every reason it is not one)."""
    if not isinstance(model, nn.Sequential):
        return None, (f"R-GAP needs an nn.Sequential chain of layers; {type(model).__name__} "
                      "may route its inputs (e.g. residual connections) in ways the layer-by-"
                      "layer inversion cannot follow")
    trainable = [p for p in model.parameters() if p.requires_grad]
    index = {id(p): i for i, p in enumerate(trainable)}
    reasons: list[str] = []
    stages: list[Stage] = []
    pending_act = False  # the last stage already has an activation
    for m in sequential_leaves(model):
        name = type(m).__name__
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d):
                if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
                    reasons.append(f"{name}: only plain convolutions (groups 1, dilation 1, "
                                   "zero padding) are supported")
                if isinstance(m.padding, str):
                    reasons.append(f"{name}: string padding {m.padding!r} is not supported")
            if id(m.weight) not in index:
                reasons.append(f"{name}: its weight is frozen, so there is no gradient to invert")
                continue
            bias_index = index.get(id(m.bias)) if m.bias is not None else None
            if m.bias is not None and bias_index is None:
                reasons.append(f"{name}: its bias is frozen")
            stages.append(Stage(m, "conv" if isinstance(m, nn.Conv2d) else "linear",
                                index[id(m.weight)], bias_index, (), ()))
            pending_act = False
        elif type(m) in ACTIVATIONS:
            if not stages:
                reasons.append(f"{name}: an activation before the first layer is not supported")
            elif pending_act:
                reasons.append(f"{name}: two activations in a row are not supported")
            elif isinstance(m, nn.LeakyReLU) and not m.negative_slope > 0:
                reasons.append(f"{name}: a LeakyReLU with slope {m.negative_slope:g} is not "
                               "invertible")
            else:
                stages[-1].act = ACTIVATIONS[type(m)]
                stages[-1].slope = float(getattr(m, "negative_slope", 0.0))
                pending_act = True
        elif isinstance(m, (nn.Identity, nn.Flatten)):
            if isinstance(m, nn.Flatten) and (m.start_dim, m.end_dim) != (1, -1):
                reasons.append(f"{name}: only Flatten(1, -1) is supported")
        elif isinstance(m, nn.Dropout) and m.p == 0:
            pass
        elif isinstance(m, NON_INVERTIBLE):
            reasons.append(f"{name}: the activation is not invertible (R-GAP needs to recover "
                           "the pre-activation from its output, e.g. LeakyReLU with slope > 0)")
        elif isinstance(m, NORM_LAYERS):
            reasons.append(f"{name}: normalisation layers (BatchNorm & co.) couple the batch and "
                           "shift the features; R-GAP's closed form does not cover them")
        elif isinstance(m, POOL_LAYERS):
            reasons.append(f"{name}: pooling is not invertible by R-GAP's recursion")
        elif isinstance(m, nn.Dropout):
            reasons.append(f"{name}: dropout applies a random mask the attacker does not know")
        else:
            reasons.append(f"{name}: unsupported module for R-GAP")
    if not stages:
        reasons.append("the model has no Conv2d/Linear layer")
    else:
        top = stages[-1]
        if top.kind != "linear":
            reasons.append("R-GAP's top layer must be a Linear layer")
        elif top.act != "identity":
            reasons.append("an activation after the top layer is not supported")
        elif top.module.bias is None and top.module.out_features != 1:
            reasons.append("a bias-free top layer with several outputs leaves the logit "
                           "gradient unknown; R-GAP needs a single logit or a biased top layer")
        biased = [type(s.module).__name__ for s in stages[:-1] if s.module.bias is not None]
        if biased:
            reasons.append(f"{len(biased)} layer(s) below the top have a bias "
                           f"({', '.join(dict.fromkeys(biased))}): R-GAP's equations assume "
                           "bias-free layers below the top")
    if reasons:
        return None, "; ".join(dict.fromkeys(reasons))
    shape_reason = _record_shapes(model, stages, input_shape)
    if shape_reason:
        return None, shape_reason
    return Chain(stages, "bias" if top.module.bias is not None else "logit"), None


def _record_shapes(model: nn.Module, stages: list[Stage], input_shape: tuple[int, ...]
                   ) -> str | None:
    shapes: dict[int, tuple[tuple[int, ...], tuple[int, ...]]] = {}

    def hook(module, inputs, output):
        shapes[id(module)] = (tuple(inputs[0].shape[1:]), tuple(output.shape[1:]))

    param = next(model.parameters())
    handles = [s.module.register_forward_hook(hook) for s in stages]
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    except Exception as e:  # a model that does not accept the input shape
        return f"the model does not run on input {tuple(input_shape)}: {e}"
    finally:
        for h in handles:
            h.remove()
    for s in stages:
        s.in_shape, s.out_shape = shapes[id(s.module)]
        if s.kind == "linear" and len(s.in_shape) != 1:  # it acts on the last dimension only
            return (f"Linear({s.module.in_features}→{s.module.out_features}) gets a "
                    f"{'×'.join(map(str, s.in_shape))} input: R-GAP needs a Flatten before a "
                    "Linear layer (it would act on the last dimension alone)")
    return None
