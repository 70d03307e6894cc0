"""CIFAR-10 (32×32 RGB, 10 classes, 50 000 train / 10 000 test) read through torchvision.

Files: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` (the python
version, ``cifar-10-python.tar.gz`` extracted), where ``<root>`` is the suite's ``root`` or
``$LEAKBENCH_DATA``.
"""

from __future__ import annotations

import torchvision

from bench.contracts import Dataset
from bench.datasets.torchvision_common import (
    COLOUR_PARAMS,
    CifarDataset,
)
from bench.registry import register_dataset


@register_dataset("cifar10")
class CIFAR10(CifarDataset, Dataset):
    """CIFAR-10 natural images in 10 classes from the pickled python batches (torchvision)."""

    paper = "Krizhevsky 2009, Learning multiple layers of features from tiny images (CIFAR-10)"
    params = COLOUR_PARAMS
    tv_class = torchvision.datasets.CIFAR10
    title = "CIFAR-10"
    archive = "cifar-10-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")
    # The training set's per-channel mean and standard deviation (as in Geiping et al.'s code).
    mean = (0.4914672374725342, 0.4822617471218109, 0.4467701315879822)
    std = (0.24703224003314972, 0.24348513782024384, 0.26158785820007324)
