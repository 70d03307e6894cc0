"""Small RGB crops of the photographs bundled with scikit-image: offline natural images."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import torch

from bench.contracts import Dataset, DatasetMeta
from bench.datasets.common import channel_stats, resize, split_every
from bench.registry import Param, register_dataset

# Colour photographs that ship inside scikit-image (no download); each one is a class.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "colorwheel", "cat")


@lru_cache(maxsize=8)
def _crops(size: int, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    import skimage.data

    images, labels = [], []
    for label, name in enumerate(PHOTOS):
        photo = torch.tensor(getattr(skimage.data, name)()[..., :3], dtype=torch.float32)
        photo = photo.permute(2, 0, 1).unsqueeze(0) / 255.0
        h, w = photo.shape[-2:]
        factor = scale / min(h, w)
        photo = torch.nn.functional.interpolate(
            photo, size=(round(h * factor), round(w * factor)), mode="bilinear",
            antialias=True, align_corners=False).clamp(0, 1)[0]
        crop = 2 * size  # cut crops of twice the size, then downsample: more detail per pixel
        stride = crop // 2
        for top in range(0, photo.shape[1] - crop + 1, stride):
            for left in range(0, photo.shape[2] - crop + 1, stride):
                images.append(photo[:, top:top + crop, left:left + crop])
                labels.append(label)
    # every photo has dozens of crops, so the every-5th split takes test crops from each
    return resize(torch.stack(images), size), torch.tensor(labels, dtype=torch.long)


@register_dataset("photos")
class Photos(Dataset):
    """RGB crops cut from 8 photographs bundled with scikit-image; the class is the photograph."""

    paper = "scikit-image's bundled sample photographs (skimage.data)"
    no_public_split = ("its crops overlap by half (stride half a crop), so every held-out crop "
                       "shares pixels with training crops")
    params = (
        Param("size", int, 32, low=8, high=128, help="side length of a crop"),
        Param("scale", int, 256, low=64, high=512, help="photos are resized to this shorter side"),
        Param("normalize", bool, False, help="standardise with the training split's statistics"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        """A crop (twice ``size``, then downsampled) must fit in the resized photos."""
        if 2 * config["size"] > config["scale"]:
            return (f"size {config['size']} cuts crops of {2 * config['size']} px, more than "
                    f"the photos' shorter side (scale {config['scale']}): give scale ≥ "
                    f"{2 * config['size']}")
        return None

    def meta(self) -> DatasetMeta:
        pixel_mean, pixel_std = channel_stats(self.load("train").tensors[0])
        mean, std = (pixel_mean, pixel_std) if self.normalize else \
            ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
        return DatasetMeta((3, self.size, self.size), len(PHOTOS), mean, std, PHOTOS,
                           pixel_mean=pixel_mean)

    def load(self, split: str):
        images, labels = _crops(self.size, self.scale)
        return split_every(images, labels, split)
