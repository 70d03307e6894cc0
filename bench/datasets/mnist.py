"""MNIST handwritten digits (28×28 grey, 60 000 train / 10 000 test) read through torchvision.

Files: ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or the same names with
``.gz``, decompressed on first use), where ``<root>`` is the suite's ``root`` or
``$LEAKBENCH_DATA``.
"""

from __future__ import annotations

import torchvision

from bench.contracts import Dataset
from bench.datasets.torchvision_common import (
    GREY_PARAMS,
    IdxDataset,
)
from bench.registry import register_dataset


@register_dataset("mnist")
class MNIST(IdxDataset, Dataset):
    """MNIST handwritten digits 0–9 from IDX files on disk (torchvision's reader)."""

    paper = "LeCun, Bottou, Bengio & Haffner 1998, Gradient-based learning (MNIST)"
    params = GREY_PARAMS
    tv_class = torchvision.datasets.MNIST
    title = "MNIST"
    url = "https://ossci-datasets.s3.amazonaws.com/mnist/"
    classes = tuple(str(i) for i in range(10))
    # The training set's mean and standard deviation (as in Geiping et al.'s code).
    mean, std = (0.13066373765468597,), (0.30810782313346863,)
