"""Fashion-MNIST (28×28 grey clothing, 60 000 train / 10 000 test) read through torchvision.

Files: ``<root>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (or ``.gz``,
decompressed on first use), where ``<root>`` is the suite's ``root`` or ``$LEAKBENCH_DATA``.
"""

from __future__ import annotations

import torchvision

from bench.contracts import Dataset
from bench.datasets.torchvision_common import (
    DOWNLOAD_PARAM,
    NORMALIZE_PARAM,
    ROOT_PARAM,
    IdxDataset,
)
from bench.registry import Param, register_dataset


@register_dataset("fashion-mnist")
class FashionMNIST(IdxDataset, Dataset):
    """Fashion-MNIST: 10 classes of Zalando clothing photos from IDX files (torchvision reader)."""

    paper = "Xiao, Rasul & Vollgraf 2017, Fashion-MNIST (arXiv:1708.07747)"
    params = (
        ROOT_PARAM,
        DOWNLOAD_PARAM,
        Param("size", int, 28, low=8, high=256, help="side length after resizing"),
        Param("channels", int, 1, choices=(1, 3), help="3 repeats the grey channel"),
        NORMALIZE_PARAM,
    )
    tv_class = torchvision.datasets.FashionMNIST
    title = "Fashion-MNIST"
    url = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
    mean, std = (0.2860,), (0.3530,)  # the customary training-set statistics
