"""scikit-learn's bundled handwritten digits (8×8, 1 797 images), resized: offline MNIST-alike."""

from __future__ import annotations

from functools import lru_cache

import torch

from bench.contracts import Dataset, DatasetMeta
from bench.datasets.common import channel_stats, resize, split_every
from bench.registry import Param, register_dataset


@lru_cache(maxsize=2)  # at 256 px one entry is 0.47 GB
def _grey(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return resize(images, size), torch.tensor(bunch.target, dtype=torch.long)


@lru_cache(maxsize=2)  # 1.4 GB at 256 px in 3 channels: eight had held 11 GB
def _digits(size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = _grey(size)
    return (images.repeat(1, channels, 1, 1) if channels > 1 else images), labels


@register_dataset("digits")
class Digits(Dataset):
    """Handwritten digits 0–9 shipped with scikit-learn (UCI optdigits), upsampled to `size`."""

    paper = "Alpaydin & Kaynak, UCI optical recognition of handwritten digits"
    params = (
        Param("size", int, 32, low=8, high=256, help="side length after resizing"),
        Param("channels", int, 1, choices=(1, 3), help="3 repeats the grey channel"),
        Param("normalize", bool, False, help="standardise with the training split's statistics"),
    )

    def meta(self) -> DatasetMeta:
        # the grey channel's statistics, repeated: a dry run (which reads every dataset's
        # meta) never builds the three-channel copy
        grey_mean, grey_std = channel_stats(split_every(*_grey(self.size), "train").tensors[0])
        pixel_mean, pixel_std = grey_mean * self.channels, grey_std * self.channels
        mean, std = (pixel_mean, pixel_std) if self.normalize else \
            ((0.0,) * self.channels, (1.0,) * self.channels)
        return DatasetMeta((self.channels, self.size, self.size), 10, mean, std,
                           tuple(str(i) for i in range(10)), pixel_mean=pixel_mean)

    def load(self, split: str):
        images, labels = _digits(self.size, self.channels)
        return split_every(images, labels, split)
