"""CIFAR-100 (32×32 RGB, 100 fine classes, 50 000 train / 10 000 test) read through torchvision.

Files: ``<root>/cifar-100-python/{train, test, meta}`` (the python version,
``cifar-100-python.tar.gz`` extracted), where ``<root>`` is the suite's ``root`` or
``$LEAKBENCH_DATA``. Labels are the 100 fine labels, as torchvision reads them.
"""

from __future__ import annotations

import torchvision

from bench.contracts import Dataset
from bench.datasets.torchvision_common import (
    COLOUR_PARAMS,
    CifarDataset,
)
from bench.registry import register_dataset

# The fine label names in label order (the ``fine_label_names`` of the archive's ``meta`` file).
FINE_LABELS = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm",
)


@register_dataset("cifar100")
class CIFAR100(CifarDataset, Dataset):
    """CIFAR-100 natural images in 100 fine classes from the pickled python files (torchvision)."""

    paper = "Krizhevsky 2009, Learning multiple layers of features from tiny images (CIFAR-100)"
    params = COLOUR_PARAMS
    tv_class = torchvision.datasets.CIFAR100
    title = "CIFAR-100"
    archive = "cifar-100-python.tar.gz"
    url = "https://www.cs.toronto.edu/~kriz/cifar.html"
    classes = FINE_LABELS
    # The training set's per-channel mean and standard deviation (as in Geiping et al.'s code).
    mean = (0.5071598291397095, 0.4866936206817627, 0.44120192527770996)
    std = (0.2673342823982239, 0.2564384639263153, 0.2761504650115967)
