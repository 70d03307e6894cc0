"""Fashion-MNIST (28×28 grey clothing, 60 000 train / 10 000 test) read through torchvision.

Files: ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or ``.gz``,
decompressed on first use), where ``<root>`` is the suite's ``root`` or ``$LEAKBENCH_DATA``.
"""

from __future__ import annotations

import torchvision

from bench.contracts import Dataset
from bench.datasets.torchvision_common import (
    GREY_PARAMS,
    IdxDataset,
)
from bench.registry import register_dataset


@register_dataset("fashion-mnist")
class FashionMNIST(IdxDataset, Dataset):
    """Fashion-MNIST: 10 classes of Zalando clothing photos from IDX files (torchvision reader)."""

    paper = "Xiao, Rasul & Vollgraf 2017, Fashion-MNIST (arXiv:1708.07747)"
    params = GREY_PARAMS
    tv_class = torchvision.datasets.FashionMNIST
    title = "Fashion-MNIST"
    url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    mean, std = (0.2860,), (0.3530,)  # the customary training-set statistics
