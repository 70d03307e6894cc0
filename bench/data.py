"""Data helpers every cell kind shares: normalisation on a dataset's metadata, the private
batch, and further batches from the same dataset (other clients, MixUp partners)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch


def _channels(values: Sequence[float], like: torch.Tensor | None = None) -> torch.Tensor:
    if like is None:
        return torch.tensor(values).view(1, -1, 1, 1)
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def normalize(x01: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Pixels in [0,1] → model-input space, with the dataset's per-channel statistics."""
    return (x01 - _channels(mean)) / _channels(std)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Model-input space → pixels in [0,1], clamped."""
    return (x * _channels(std, x) + _channels(mean, x)).clamp(0.0, 1.0)


def stack_items(data: Any, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples (stacked) and labels of ``data[i]`` for each index: integer labels, or label
    tensors stacked (a language model's next tokens, one per position)."""
    xs, ys = zip(*(data[int(i)] for i in indices))
    if isinstance(ys[0], torch.Tensor) and ys[0].dim() > 0:
        return torch.stack(xs), torch.stack(ys)
    return torch.stack(xs), torch.tensor([int(y) for y in ys])


def sample_batch(dataset: Any, batch_size: int, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """A private batch of distinct training images in [0,1], drawn with the scenario's seed."""
    data = dataset.load("train")
    return stack_items(data, torch.randperm(len(data), generator=generator)[:batch_size])


def other_batches(dataset: Any, meta: Any, device: torch.device, seed: int
                  ) -> Callable[[int], tuple[torch.Tensor, torch.Tensor]]:
    """A sampler of further training batches (model-input space) for defenses that need them
    (token ids pass through: text has no normalisation)."""
    gen = torch.Generator().manual_seed(seed ^ 0x5EC)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x01, y = sample_batch(dataset, n, gen)
        if getattr(meta, "modality", "image") == "text":
            return x01.to(device), y.to(device)
        return normalize(x01, meta.mean, meta.std).to(device), y.to(device)

    return sample
