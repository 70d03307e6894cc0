"""SVHN cropped digits (32×32 RGB house numbers; 73 257 train / 26 032 test) via torchvision.

Files: ``<root>/train_32x32.mat`` and ``<root>/test_32x32.mat`` (format 2, the cropped digits),
where ``<root>`` is the suite's ``root`` or ``$LEAKBENCH_DATA/SVHN`` (torchvision keeps SVHN's
files straight in its root, so the shared data folder gives them a sub-folder of their own).
torchvision maps the label 10 of the digit 0 to 0.
"""

from __future__ import annotations

import os
from typing import Any

import torchvision

from bench.contracts import Dataset, DatasetMeta
from bench.datasets.torchvision_common import (
    COLOUR_PARAMS,
    TensorPairs,
    check_files,
    check_split,
    data_root,
    folder_source,
    load_cached,
    pixel_mean,
    stats,
    to_tensor_image,
    torchvision_call,
    without_checksums,
)
from bench.registry import register_dataset

SUBFOLDER = "SVHN"
URL = "http://ufldl.stanford.edu/housenumbers/"


def _unverified() -> type:
    tables = torchvision.datasets.SVHN.split_list
    return without_checksums(torchvision.datasets.SVHN,
                             split_list={k: [url, name, None] for k, (url, name, _) in
                                         tables.items()})


@register_dataset("svhn")
class SVHN(Dataset):
    """Street View House Numbers, cropped 32×32 digits, from the .mat files (torchvision reader)."""

    paper = ("Netzer et al. 2011, Reading digits in natural images with unsupervised "
             "feature learning")
    params = COLOUR_PARAMS
    classes = tuple(str(i) for i in range(10))
    # The customary per-channel statistics of the training set.
    mean = (0.4377, 0.4438, 0.4728)
    std = (0.1980, 0.2010, 0.1970)

    def meta(self) -> DatasetMeta:
        mean, std = stats(self.mean, self.std, 3, self.normalize)
        return DatasetMeta((3, self.size, self.size), 10, mean, std, self.classes,
                           pixel_mean=pixel_mean(self.mean, 3))

    def source(self) -> dict[str, Any]:
        return folder_source(data_root(self.root, self.registry_name, SUBFOLDER))

    def load(self, split: str) -> TensorPairs:
        check_split(split)
        name = self.registry_name
        root = data_root(self.root, name, SUBFOLDER)
        file = torchvision.datasets.SVHN.split_list[split][1]
        place = f"put {file} ({URL}) in {root}"
        how = f"set `download: true` in the suite, or {place}"
        if self.download:
            how = f"the download failed or was incomplete; or {place}"
        else:
            check_files(name, root, [file], how)
            if self.verify:
                how = (f"{root}{os.sep}{file} differs from the official SVHN file (md5): replace "
                       f"it, or set `verify: false` to skip torchvision's checksum")
        cls = torchvision.datasets.SVHN if self.verify else _unverified()
        base = load_cached(
            (name, str(root.resolve()), split, self.verify),
            lambda: torchvision_call(name, lambda: cls(str(root), split=split,
                                                       download=self.download), how))
        return TensorPairs(base, to_tensor_image(self.size, 3))
