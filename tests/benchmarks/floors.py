"""The floors under the batched-trials benchmarks: K trials of an attack's objective and its
gradient written by hand as one channel-stacked model (trial k owns convolution group k), with
no ``vmap`` and no optimiser, so that what they cost is the arithmetic's own.

A :class:`Floor` holds the training loss (of the weights and the attack's inputs) and the
gradient distance (of the weights' gradients and the inputs); the benchmarks differentiate it
twice either with ``torch.autograd`` (:func:`autograd_seconds`, the eager floor) or with
``torch.func`` under ``torch.compile`` (:func:`compiled`, which fuses the double backward's
elementwise passes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

fn = torch.nn.functional
Tensors = list[torch.Tensor]


@dataclass
class Floor:
    weights: Tensors
    observed: Tensors
    inputs: Tensors  # what the attack optimises: the images (and DLG's label logits)
    loss: Callable[[Tensors, Tensors], torch.Tensor]  # (weights, inputs) -> training loss
    distance: Callable[[Tensors, Tensors], torch.Tensor]  # (gradients, inputs) -> objective


def lenet(k: int) -> Floor:
    """DLG on LeNet-sigmoid at 32×32: the L2 distance of the gradients, soft labels."""
    gen = torch.Generator().manual_seed(k)
    shapes = [(k * 12, 3, 5, 5), (k * 12,), (k * 12, 12, 5, 5), (k * 12,),
              (k * 12, 12, 5, 5), (k * 12,), (k, 10, 768), (k, 10)]
    weights = [torch.rand(s, generator=gen) - 0.5 for s in shapes]
    observed = [torch.randn(s, generator=gen) for s in shapes]
    inputs = [torch.randn(1, k * 3, 32, 32, generator=gen), torch.randn(k, 10, generator=gen)]

    def loss(w: Tensors, inputs: Tensors) -> torch.Tensor:
        h, logits = inputs
        for i, stride in enumerate((2, 2, 1)):
            h = torch.sigmoid(fn.conv2d(h, w[2 * i], w[2 * i + 1], stride=stride, padding=2,
                                        groups=k))
        out = torch.einsum("kf,kof->ko", h.reshape(k, -1), w[6]) + w[7]
        return -(logits.softmax(-1) * out.log_softmax(-1)).sum()

    def distance(grads: Tensors, inputs: Tensors) -> torch.Tensor:
        return sum(((g - o) ** 2).sum() for g, o in zip(grads, observed))

    return Floor(weights, observed, inputs, loss, distance)


def convnet(k: int, width: int = 4) -> Floor:
    """Inverting Gradients on the ConvNet of ``bench/archs/convnet.py`` at ``width`` with
    BatchNorm in train mode (per channel, so per trial): 1 − cosine of the gradients, plus
    TV."""
    gen = torch.Generator().manual_seed(k)
    plan = [(3, width), (width, 2 * width), (2 * width, 2 * width), (2 * width, 4 * width),
            (4 * width, 4 * width), (4 * width, 4 * width), "pool", (4 * width, 4 * width),
            (4 * width, 4 * width), "pool"]
    weights = []
    for cin, cout in [c for c in plan if c != "pool"]:  # conv weight and bias, BN's
        weights += [torch.randn(k * cout, cin, 3, 3, generator=gen) / (3 * cin ** 0.5),
                    torch.zeros(k * cout), torch.ones(k * cout), torch.zeros(k * cout)]
    weights += [torch.randn(k, 10, 36 * width, generator=gen) * 0.05, torch.zeros(k, 10)]
    observed = [torch.randn(w.shape, generator=gen) for w in weights]
    inputs = [torch.randn(1, k * 3, 32, 32, generator=gen)]
    labels = torch.randint(10, (k,), generator=gen)

    def loss(w: Tensors, inputs: Tensors) -> torch.Tensor:
        h, i = inputs[0], 0
        for item in plan:
            if item == "pool":
                h = fn.max_pool2d(h, 3)
                continue
            h = fn.conv2d(h, w[i], w[i + 1], padding=1, groups=k)
            h = fn.relu(fn.batch_norm(h, None, None, w[i + 2], w[i + 3], training=True))
            i += 4
        out = torch.einsum("kf,kof->ko", h.reshape(k, -1), w[i]) + w[i + 1]
        return fn.cross_entropy(out, labels, reduction="sum")

    def per_trial(ts: Tensors) -> torch.Tensor:  # [K]: each trial's own sum
        return sum(t.reshape(k, -1).sum(1) for t in ts)

    def distance(grads: Tensors, inputs: Tensors) -> torch.Tensor:
        dot = per_trial([g * o for g, o in zip(grads, observed)])
        norms = per_trial([g * g for g in grads]).sqrt() * per_trial(
            [o * o for o in observed]).sqrt()
        images = inputs[0].reshape(k, 3, 32, 32)
        tv = ((images[:, :, 1:] - images[:, :, :-1]).abs().mean((1, 2, 3))
              + (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean((1, 2, 3)))
        return (1 - dot / norms + 1e-4 * tv).sum()

    return Floor(weights, observed, inputs, loss, distance)


FLOORS: dict[str, tuple[Callable[[int], Floor], int]] = {
    "dlg-lenet": (lenet, 60),  # (the floor, how many evaluations a pass times)
    "ig-convnet4": (convnet, 20),
}


def autograd_seconds(floor: Floor, evals: int) -> float:
    """Seconds for ``evals`` evaluations of the objective and its gradient by a double
    backward of ``torch.autograd``."""
    weights = [w.clone().requires_grad_(True) for w in floor.weights]
    inputs = [t.clone().requires_grad_(True) for t in floor.inputs]
    t0 = time.perf_counter()
    for _ in range(evals):
        grads = torch.autograd.grad(floor.loss(weights, inputs), weights, create_graph=True)
        torch.autograd.grad(floor.distance(grads, inputs), inputs)
    return time.perf_counter() - t0


def compiled(floor: Floor) -> Callable[[], Tensors]:
    """The objective's gradient as one ``torch.func`` function compiled by inductor (static
    shapes), called on the floor's tensors; the first call compiles it."""
    def objective(inputs: Tensors, weights: Tensors) -> torch.Tensor:
        grads = torch.func.grad(lambda w: floor.loss(w, inputs))(weights)
        return floor.distance(grads, inputs)

    gradient = torch.compile(torch.func.grad(objective), dynamic=False)
    return lambda: gradient(floor.inputs, floor.weights)
