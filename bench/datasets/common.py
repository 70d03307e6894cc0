"""Shared helpers for datasets: resizing, splitting and the per-channel statistics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize N×C×H×W images in [0,1] to size×size with antialiased bilinear interpolation."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                        align_corners=False)
    return out.clamp_(0.0, 1.0)


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean = images.mean(dim=(0, 2, 3))
    std = images.std(dim=(0, 2, 3)).clamp_min(1e-6)
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


def split_every(images: torch.Tensor, labels: torch.Tensor, split: str, every: int = 5
                ) -> TensorDataset:
    """Deterministic split: every ``every``-th item is test, the rest train."""
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}")
    idx = torch.arange(len(labels))
    mask = (idx % every == 0) if split == "test" else (idx % every != 0)
    return TensorDataset(images[mask], labels[mask])
