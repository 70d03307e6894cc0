"""A folder of images in class sub-folders (LFW, CelebA or ImageNet-style), via torchvision.

Two layouts are understood, under ``<root>`` = the suite's ``root`` or
``$LEAKBENCH_DATA/<folder>``:

- split folders: ``<root>/train/<class>/*.png|jpg…`` and ``<root>/test/<class>/…`` (or ``val/``
  for ImageNet); the classes are the sub-folders of ``train/``;
- one folder: ``<root>/<class>/*.png|jpg…`` (e.g. LFW's ``lfw/<person>/<person>_0001.jpg``);
  then, in torchvision's sorted file order, every 5th image is the test split and the rest train.

Images are decoded to RGB, resized so that the shorter side is ``size`` and centre-cropped to
size×size. 16-bit greyscale images (PIL modes ``I;16*``, and ``I`` from a PNG) are scaled by
1/65535 (converting them to RGB clipped every value above 255 to white); images of no known
range (float, 32-bit integer) are refused, naming the file. An image so elongated that its
resized long side would pass ``MAX_RESIZED_SIDE`` is centre-cropped to a square first (a
1×1,000,000 PNG of 32 KB became 24×24,000,000 pixels before the crop).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.datasets.folder import (
    IMG_EXTENSIONS,
    find_classes,
    has_file_allowed_extension,
)

from bench.contracts import Dataset, DatasetMeta
from bench.datasets.torchvision_common import (
    NORMALIZE_PARAM,
    ROOT_PARAM,
    DatasetNotFoundError,
    TensorPairs,
    check_split,
    data_root,
    evenly_spaced,
    folder_source,
    load_cached,
    pixel_mean,
    stats,
    torchvision_call,
)
from bench.registry import Param, register_dataset

TEST_EVERY = 5  # one folder: every 5th image (in sorted order) is a test image
# The customary ImageNet statistics, used by ImageNet-style folders.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
GREY16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")  # PIL's 16-bit greyscale: 0..65535
MAX_RESIZED_SIDE = 4096  # pixels: an image resized longer is centre-cropped to a square first


def _regular_image(path: str) -> bool:
    """An image file torchvision would take, and a regular one: a FIFO named 01.png blocked
    the run for ever."""
    return has_file_allowed_extension(path, IMG_EXTENSIONS) and os.path.isfile(path)


def _open_image(path: str) -> Any:
    """torchvision's loader (an RGB image), with PIL's warning about a huge image (over 89
    million pixels, decoded whole) raised as the error it gives past twice that; a 16-bit grey
    image is a 3×H×W float tensor in [0,1] instead, as converting it to RGB clipped it. A
    file that fails as it is decoded (truncated: its header passed the preflight) names
    itself: the cell's error record had said only "image file is truncated"."""
    try:
        return _decode(path)
    except OSError as e:
        if path in str(e):
            raise
        raise OSError(f"{path}: {e}") from None


def _decode(path: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with open(path, "rb") as f:
            image = Image.open(f)
            if image.mode in GREY16_MODES or (image.mode == "I" and image.format == "PNG"):
                grey = np.asarray(image).astype(np.float32) / 65535  # a PNG holds 16 bits
                return torch.from_numpy(grey).expand(3, *grey.shape)
            if image.mode in ("I", "F") or image.mode.startswith(("I;", "F;")):
                raise ValueError(f"{path}: PIL mode {image.mode} (a float or 32-bit image) has "
                                 "no known range of values: save it as 8-bit or 16-bit")
            return image.convert("RGB")


class _FolderWithClasses(torchvision.datasets.ImageFolder):
    """torchvision's ImageFolder with the class list fixed (the test split uses train's)."""

    def __init__(self, root: str, classes: list[str]) -> None:
        self._fixed = {c: i for i, c in enumerate(classes)}
        super().__init__(root, loader=_open_image, is_valid_file=_regular_image,
                         allow_empty=True)

    def find_classes(self, directory: str | Path) -> tuple[list[str], dict[str, int]]:
        return list(self._fixed), dict(self._fixed)


TEST_FOLDERS = ("test", "val", "valid", "validation")
"""The names of a split layout's test folder beside ``train/``, in the order looked for."""


def _layout(root: Path) -> tuple[Path, Path | None]:
    """(folder of the train classes, folder of the test classes or None for one folder)."""
    train = root / "train"
    for name in TEST_FOLDERS:
        if train.is_dir() and (root / name).is_dir():
            return train, root / name
    return root, None


def _class_folders(folder: Path) -> list[str]:
    """The class sub-folders of ``folder``, sorted as torchvision sorts them, hidden ones
    (``.ipynb_checkpoints``, ``.git``) left out: they had been class 0, every real label
    shifted by one."""
    _, found = find_classes(folder)
    return sorted(c for c in found if not c.startswith("."))


def _holds_an_image(folder: Path) -> bool:
    """Whether any file under ``folder`` is one the dataset reads (stops at the first)."""
    for here, _, files in os.walk(folder, followlinks=True):
        if any(_regular_image(os.path.join(here, f)) for f in files):
            return True
    return False


def _crop(size: int) -> Any:
    """A PIL image or float tensor → size×size tensor: resized, then centre-cropped; an image
    whose resized long side would pass ``MAX_RESIZED_SIDE`` is cropped to its central square
    first (the same pixels, without the resized image of gigabytes)."""
    def convert(img: Any) -> torch.Tensor:
        _, height, width = TF.get_dimensions(img)
        short = min(height, width)
        if size * max(height, width) > MAX_RESIZED_SIDE * short:
            img = TF.center_crop(img, [short, short])
        img = TF.resize(img, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
        img = TF.center_crop(img, [size, size])
        return (img if isinstance(img, torch.Tensor) else TF.to_tensor(img)).contiguous()

    return convert


@register_dataset("imagefolder")
class ImageFolder(Dataset):
    """Images in class sub-folders (LFW, CelebA, ImageNet-style), resized and centre-cropped."""

    paper = "torchvision ImageFolder layout (LFW: Huang et al. 2007; CelebA: Liu et al. 2015)"
    params = (
        ROOT_PARAM,
        Param("folder", str, "imagefolder",
              help="sub-folder of $LEAKBENCH_DATA used when `root` is not given"),
        Param("size", int, 32, low=8, high=512, help="side length after resize + centre crop"),
        Param("max_images", int, None, low=1, nullable=True,
              help="keep at most this many images per split, spread evenly over the files"),
        NORMALIZE_PARAM,
    )

    def _root(self) -> Path:
        root = data_root(self.root, self.registry_name, self.folder)
        if not root.is_dir():
            raise DatasetNotFoundError(
                f"{self.registry_name}: folder {root} not found: point `root:` (or "
                f"$LEAKBENCH_DATA/{self.folder}) at a folder of class sub-folders of images "
                f"(<class>/<image>.png|jpg, or train/<class>/… and test/<class>/…)")
        return root

    def source(self) -> dict[str, Any]:
        return folder_source(data_root(self.root, self.registry_name, self.folder))

    def classes(self) -> list[str]:
        """The class names: the sub-folders of the train folder, sorted (torchvision's rule)."""
        name, root = self.registry_name, self._root()
        train, test = _layout(root)
        try:
            classes = _class_folders(train)
        except FileNotFoundError:
            classes = []
        if not classes:
            raise DatasetNotFoundError(
                f"{name}: no class sub-folders in {train}: put each class's images in a "
                f"sub-folder of its own (<class>/<image>.png|jpg)")
        if test is None and set(classes) <= {"train", *TEST_FOLDERS}:  # split folders read
            # as classes, each label its split (a class named "train" beside others, as in
            # PASCAL VOC, is a class)
            raise DatasetNotFoundError(
                f"{name}: {root} holds {', '.join(f'{c}/' for c in classes)} but not train/ "
                f"beside a test/ (or {', '.join(f'{c}/' for c in TEST_FOLDERS[1:])}): give "
                "both, or point root at a folder of class sub-folders")
        empty = next((c for c in classes if not _holds_an_image(train / c)), None)
        if empty is not None:  # a class no image can be drawn of, counted in the labels
            raise DatasetNotFoundError(
                f"{name}: class folder {train / empty} holds no image (images are the files "
                f"ending {', '.join(IMG_EXTENSIONS)}; others, such as .gif, are not read): "
                "remove it or add its images")
        return classes

    def meta(self) -> DatasetMeta:
        """Needs the folder (the classes are its sub-folders), but no image is read."""
        classes = self.classes()
        mean, std = stats(IMAGENET_MEAN, IMAGENET_STD, 3, self.normalize)
        return DatasetMeta((3, self.size, self.size), len(classes), mean, std, tuple(classes),
                           pixel_mean=pixel_mean(IMAGENET_MEAN, 3))

    def load(self, split: str) -> TensorPairs:
        check_split(split)
        name = self.registry_name
        root = self._root()
        train, test = _layout(root)
        classes = self.classes()
        how = "check that the images are readable and in class sub-folders"
        if test is None:
            base = load_cached((name, str(root.resolve()), "all"), lambda: torchvision_call(
                name, lambda: _FolderWithClasses(str(train), classes), how))
            picked = [i for i in range(len(base))
                      if (i % TEST_EVERY == 0) == (split == "test")]
        else:
            folder = train if split == "train" else test
            base = load_cached((name, str(root.resolve()), split), lambda: torchvision_call(
                name, lambda: _FolderWithClasses(str(folder), classes), how))
            picked = list(range(len(base)))
        if not picked and len(base):  # one image: every one lands in the test split
            raise DatasetNotFoundError(
                f"{name}: {len(base)} image(s) under {root}, too few to split: every "
                f"{TEST_EVERY}th is a test image and the rest train; give at least 2, or "
                "train/<class>/… and test/<class>/… folders")
        if not picked:
            raise DatasetNotFoundError(
                f"{name}: no {split} images found under {root}: {how} (images are the files "
                f"ending {', '.join(IMG_EXTENSIONS)}; others, such as .gif, are not read)")
        keep = evenly_spaced(len(picked), self.max_images)
        if keep is not None:
            picked = [picked[i] for i in keep]
        return TensorPairs(base, _crop(self.size), picked)
