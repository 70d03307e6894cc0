"""Data helpers every cell kind shares: normalisation on a dataset's metadata, the private
batch, and further batches from the same dataset (other clients, MixUp partners)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch


def _channels(values: Sequence[float], like: torch.Tensor | None = None) -> torch.Tensor:
    if like is None:
        return torch.tensor(values).view(1, -1, 1, 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalize(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels in [0,1] → model-input space, with the dataset's per-channel statistics."""
    return (x01 - _channels(mean, x01)) / _channels(std, x01)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model-input space → pixels in [0,1], clamped."""
    return (x * _channels(std, x) + _channels(mean, x)).clamp(0.0, 1.0)


def input_centre(meta: Any, like: torch.Tensor) -> torch.Tensor | None:
    """The dataset's per-channel pixel mean in model-input space, shaped (1, C, 1, 1) with
    ``like``'s dtype and device (0 where the harness normalises with that mean); mid-grey
    (0.5) for a dataset whose metadata states no ``pixel_mean`` (InstaHide's flip about
    pixel 0 would be undone by absolute values); None for text."""
    if getattr(meta, "modality", "image") == "text":
        return None
    pixel_mean = getattr(meta, "pixel_mean", ()) or (0.5,) * int(meta.shape[0])
    return normalize(_channels(pixel_mean, like), meta.mean, meta.std)


PIXEL_SLACK = 1e-4
"""How far past [0, 1] a pixel may lie before its dataset is refused: a float image resized
with antialiasing overshoots by ~1e-6 (imagefolder's 16-bit greys), a 0–255 or normalised
image by far more."""


def stack_items(data: Any, indices: Sequence[int], meta: Any = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (stacked) and labels of ``data[i]`` for each index: integer labels, or label
    tensors stacked (a language model's next tokens, one per position).

    Pixels must lie in [0, 1]. With the dataset's ``meta`` (:class:`bench.contracts.
    DatasetMeta`), images must be floating-point of its shape (float64 or float16 become
    float32, the harness's precision) and labels class indices of its classes: items that
    disagreed with their metadata had ended in torch's shape or dtype errors naming no
    dataset, or ran with truncated labels."""
    xs, ys = zip(*(data[int(i)] for i in indices))
    if not all(isinstance(v, torch.Tensor) for v in xs):
        raise TypeError(f"the dataset's load() gives items of type {type(xs[0]).__name__}, "
                        "expected tensors")
    if len({v.shape for v in xs}) > 1:
        raise ValueError(f"the dataset's items differ in shape ({tuple(xs[0].shape)}, "
                         f"{next(tuple(v.shape) for v in xs if v.shape != xs[0].shape)})")
    x = torch.stack(xs)
    image = meta is not None and getattr(meta, "modality", "image") == "image"
    per_position = meta is not None and not image and getattr(meta, "task", "") == "lm"
    if (image or meta is None) and x.is_floating_point() and x.numel() and not (
            -PIXEL_SLACK <= float(x.min()) and float(x.max()) <= 1 + PIXEL_SLACK):  # NaN
        raise ValueError(f"the dataset's images lie outside [0, 1] (min {float(x.min()):.7g}, "
                         f"max {float(x.max()):.7g}): a dataset's load() returns pixels in "
                         "[0, 1] (not 0–255, nor normalised: DatasetMeta's mean and std do that)")
    if meta is not None:
        x = _checked_items(x, meta, image)
    if isinstance(ys[0], torch.Tensor) and ys[0].dim() > 0:
        if meta is not None and not per_position:
            raise ValueError(f"the dataset's labels are tensors of shape {tuple(ys[0].shape)}: "
                             "a dataset's load() gives one class index per item (not one-hot "
                             "rows)")
        y = torch.stack(ys)
        if per_position and y.shape != x.shape:
            raise ValueError(f"the dataset's labels have shape {tuple(y.shape[1:])} per item, "
                             f"its items {tuple(x.shape[1:])}: a language model's labels are "
                             "the next token at every position")
        return x, y
    if per_position:
        raise ValueError("the dataset's labels are one number per item: a language model's "
                         "labels are the next token at every position (its DatasetMeta's task "
                         "is 'lm')")
    y = torch.tensor([_class_index(v) for v in ys])
    if meta is not None and len(y) and not 0 <= int(y.min()) <= int(y.max()) < meta.num_classes:
        raise ValueError(f"the dataset's labels lie outside 0…{meta.num_classes - 1} (min "
                         f"{int(y.min())}, max {int(y.max())}): its DatasetMeta says "
                         f"{meta.num_classes} classes")
    return x, y


def _checked_items(x: torch.Tensor, meta: Any, image: bool) -> torch.Tensor:
    dtype = str(x.dtype).removeprefix("torch.")
    if image and not x.is_floating_point():
        raise ValueError(f"the dataset's images are {dtype} (0–255?): a dataset's load() "
                         "returns float pixels in [0, 1]")
    if not image and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise ValueError(f"the dataset's token ids are {dtype}, expected integers")
    if tuple(x.shape[1:]) != tuple(meta.shape):
        raise ValueError(f"the dataset's items have shape {tuple(x.shape[1:])}, its "
                         f"DatasetMeta says {tuple(meta.shape)}")
    return x.float() if image else x


def _class_index(label: object) -> int:
    value = label
    if not isinstance(label, (int, float)) and hasattr(label, "item"):  # a tensor, numpy's
        try:
            value = label.item()
        except (ValueError, RuntimeError):  # more than one element
            pass
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(value) and value == int(value):
        return int(value)
    raise ValueError(f"the dataset's labels are class indices (whole numbers): its load() "
                     f"gave {label!r}")


def batch_indices(size: int, batch_size: int, generator: torch.Generator,
                  taken: set[int] | None = None) -> list[int]:
    """``batch_size`` distinct indices of ``range(size)`` in a random order; with ``taken``,
    none of those, and the drawn ones are added to it (a draw that meets no taken index is
    the draw without ``taken``: same picks, same generator state)."""
    perm = torch.randperm(size, generator=generator)
    picked = perm[:batch_size].tolist() if taken is None else [
        i for i in perm.tolist() if i not in taken][:batch_size]
    if len(picked) < batch_size:
        raise ValueError(f"the dataset's {size} training items cannot give {batch_size} more "
                         f"distinct ones ({len(taken or ())} already held)")
    if taken is not None:
        taken.update(picked)
    return picked


def sample_batch(dataset: Any, batch_size: int, generator: torch.Generator,
                 taken: set[int] | None = None, meta: Any = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of distinct training images in [0,1] (the private batch: drawn with the
    scenario's seed), none of ``taken`` where given (:func:`batch_indices`), checked against
    ``meta`` where given (:func:`stack_items`)."""
    data = dataset.load("train")
    return stack_items(data, batch_indices(len(data), batch_size, generator, taken), meta)


def poisson_batch(dataset: Any, sample_rate: float, generator: torch.Generator,
                  meta: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A Poisson-sampled batch of training items in [0,1]: each joins independently with
    probability ``sample_rate``, so its size varies and may be 0 (the sampling DP-SGD's
    accountants assume: Abadi et al. 2016, Opacus)."""
    data = dataset.load("train")
    picked = (torch.rand(len(data), generator=generator) < sample_rate).nonzero()[:, 0]
    if len(picked):
        return stack_items(data, picked.tolist(), meta)
    x, y = stack_items(data, [0], meta)  # none drawn: the shapes and dtypes of one item, no rows
    return x[:0], y[:0]


def other_batches(dataset: Any, meta: Any, device: torch.device, seed: int,
                  taken: set[int] | None = None
                  ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A sampler of further training batches (model-input space) for defenses that need them
    (token ids pass through: text has no normalisation). With ``taken`` (the private batch's
    indices) every draw is of images no earlier draw and not the private batch holds: the
    other clients of a secure aggregate hold their own data, MixUp mixes with other images."""
    gen = torch.Generator().manual_seed(seed ^ 0x5EC)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x01, y = sample_batch(dataset, n, gen, taken, meta)
        if getattr(meta, "modality", "image") == "text":
            return x01.to(device), y.to(device)
        return normalize(x01, meta.mean, meta.std).to(device), y.to(device)

    return sample
