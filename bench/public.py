"""The public split of a dataset: images of the same distribution that no client holds.

Private batches (the client's, other clients' in a secure aggregate, MixUp partners) are
all drawn from a dataset's ``train`` split. The public split is its held-out ``test``
split with every image that also occurs in ``train`` (pixel for pixel) removed, so that it
shares no image with any private batch even where the raw data holds duplicates. A dataset
whose held-out items share content with training items in other ways (``photos``: crops
overlapping by half) declares ``no_public_split`` and has none. An
attacker granted ``public_data`` (bench.grants) receives it, e.g. to train a score model
(bench.scoremodel) as its image prior; nothing trained on it ever saw a private image.
A text dataset's public split is alike: its held-out sentences as token ids (N×L in
``images``), those equal to a training sequence already left out (bench.datasets.text_common);
``frequent_words`` counts its words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from bench.data import stack_items
from bench.registry import LeakbenchError

SPLIT_RULE = "test split minus exact duplicates of train images"


@dataclass(frozen=True)
class PublicData:
    """The public split in [0,1] (N×C×H×W) with its labels, and the key that names it."""

    images: torch.Tensor
    labels: torch.Tensor
    key: dict[str, Any]  # dataset name, parameters, split rule, content hash: for caches


def image_digest(image: torch.Tensor) -> str:
    """A content hash of one image (its float32 bytes)."""
    return hashlib.sha256(image.detach().float().contiguous().numpy().tobytes()).hexdigest()


def _all(data: Any, meta: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return stack_items(data, range(len(data)), meta)


@lru_cache(maxsize=8)
def _public(name: str, params: tuple[tuple[str, Any], ...]) -> PublicData:
    from bench.registry import DATASETS

    dataset = DATASETS.get(name).cls(**dict(params))
    if dataset.no_public_split:  # its held-out items share pixels with training items
        raise LeakbenchError(f"{name} has no public split: {dataset.no_public_split}")
    meta = dataset.meta()  # the items checked as the private batch's are (float32 images)
    train, _ = _all(dataset.load("train"), meta)
    private = {image_digest(x) for x in train}
    images, labels = _all(dataset.load("test"), meta)
    keep = [i for i, x in enumerate(images) if image_digest(x) not in private]
    images, labels = images[keep].clone(), labels[keep].clone()
    content = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes()).hexdigest()
    # the content's hash too: a folder dataset's files (or $LEAKBENCH_DATA) can change
    # under the same name and parameters, and a cached score model must not outlive them
    key = {"dataset": name, "params": dict(params), "split": SPLIT_RULE, "sha256": content}
    return PublicData(images, labels, key)


def public_data(dataset: Any) -> PublicData:
    """The public split of a registered dataset component (cached per name and parameters)."""
    name = getattr(dataset, "registry_name", "") or type(dataset).__name__
    params = tuple(sorted(getattr(dataset, "config", {}).items()))
    shared = _public(name, params)  # copies: an attack editing them cannot reach the cache
    return PublicData(shared.images.clone(), shared.labels.clone(), dict(shared.key))
