"""Shared code of the on-disk datasets read through torchvision (MNIST, CIFAR, SVHN, folders).

Where the files are looked for:

- the suite parameter ``root`` (passed to torchvision as its ``root``), else
- the environment variable ``LEAKBENCH_DATA`` (then ``$LEAKBENCH_DATA`` itself, or a sub-folder
  of it for datasets whose files torchvision puts straight into its root: SVHN, image folders).

Nothing is downloaded unless the suite says ``download: true``. Missing files are a one-line
:class:`DatasetNotFoundError` that names the folder and how to fill it.

Loading is cheap and done once per process: the torchvision dataset objects (which keep the
uint8 arrays, or the file list of an image folder) are cached per (dataset, root, split) and
wrapped by :class:`TensorPairs`, whose items are ``(float32 image in [0,1], C×H×W; int label)``
as the :class:`bench.contracts.Dataset` contract asks.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision.transforms.functional as TF
from torch.utils.data import Dataset as TorchDataset

from bench.datasets.common import resize
from bench.paths import expanded
from bench.registry import LeakbenchError, Param

DATA_ENV = "LEAKBENCH_DATA"

# The parameters every torchvision-backed dataset declares.
# root/download/verify say where and how to load, not what is measured: they stay out of
# the cell identity, so ids and seeds do not depend on a machine's paths.
ROOT_PARAM = Param("root", str, None, nullable=True, identity=False, path=True,
                   help=f"folder given to torchvision as its root (default: ${DATA_ENV})")
DOWNLOAD_PARAM = Param("download", bool, False, identity=False,
                       help="let torchvision download the files when they are missing")
NORMALIZE_PARAM = Param("normalize", bool, False,
                        help="standardise with the dataset's customary mean/std")

# Bounded cache of loaded torchvision datasets: (name, root, split, options) → object.
_CACHE: dict[tuple[Any, ...], TorchDataset] = {}
_CACHE_SIZE = 8


class DatasetNotFoundError(LeakbenchError):
    """The files of an on-disk dataset are missing or unreadable (one line, no traceback)."""


def data_root(root: str | None, name: str, subfolder: str = "") -> Path:
    """The folder to read ``name`` from: the suite's ``root``, else ``$LEAKBENCH_DATA[/sub]``."""
    if root:
        return expanded(root, DatasetNotFoundError)
    env = os.environ.get(DATA_ENV, "").strip()
    if not env:
        raise DatasetNotFoundError(
            f"{name}: no data folder: set `root:` in the suite's dataset parameters, or the "
            f"environment variable {DATA_ENV}")
    base = expanded(env, DatasetNotFoundError)
    return base / subfolder if subfolder else base


def folder_source(folder: Path) -> dict[str, Any]:
    """A folder and a fingerprint of its files (relative path, size, modification time), for
    :meth:`bench.contracts.Dataset.source`; an absent folder has none. Walked once per
    process and folder (a run's files do not change under it)."""
    resolved = str(folder.resolve())
    return {"root": resolved, "files": _fingerprint(resolved)}


@functools.lru_cache(maxsize=32)
def _fingerprint(folder: str) -> str:
    digest = hashlib.sha256()
    root = Path(folder)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            st = path.stat()
            digest.update(f"{path.relative_to(root)}\0{st.st_size}\0{st.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()


def check_files(name: str, folder: Path, files: Sequence[str], how: str) -> None:
    """Raise :class:`DatasetNotFoundError` naming the first missing file and how to get them."""
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DatasetNotFoundError(
            f"{name}: {missing[0]}{more} not found in {folder}: {how}")


def load_cached(key: tuple[Any, ...], build: Callable[[], TorchDataset]) -> TorchDataset:
    """Build a torchvision dataset once per process (bounded, oldest evicted first)."""
    if key in _CACHE:
        return _CACHE[key]
    dataset = build()
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = dataset
    return dataset


def clear_cache() -> None:
    """Forget every loaded dataset (tests; or after the files on disk changed)."""
    _CACHE.clear()


def torchvision_call(name: str, build: Callable[[], TorchDataset], how: str) -> TorchDataset:
    """Run torchvision's constructor, turning its errors into one-line dataset errors."""
    try:
        return build()
    except Exception as err:  # noqa: BLE001 - pickle, EOF, assertions: all one line
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
        what = f"{type(err).__name__}: {first}" if first else type(err).__name__
        if isinstance(err, (RuntimeError, OSError)) and first:
            what = first  # torchvision's own messages say what is wrong
        raise DatasetNotFoundError(f"{name}: torchvision could not read the files ({what}): "
                                   f"{how}") from err


def check_split(split: str) -> None:
    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r} (expected 'train' or 'test')")


def stats(mean: Sequence[float], std: Sequence[float], channels: int, normalize: bool
          ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The customary per-channel statistics when ``normalize``, else the identity (0, 1)."""
    if not normalize:
        return (0.0,) * channels, (1.0,) * channels
    if len(mean) == 1 and channels > 1:  # a grey dataset repeated to RGB keeps its statistics
        mean, std = tuple(mean) * channels, tuple(std) * channels
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def pixel_mean(mean: Sequence[float], channels: int) -> tuple[float, ...]:
    """The customary per-channel pixel mean, grey repeated to ``channels``, normalised or not."""
    return stats(mean, mean, channels, True)[0]


def to_tensor_image(size: int | None = None, channels: int | None = None
                    ) -> Callable[[Any], torch.Tensor]:
    """PIL image → float32 C×H×W in [0,1], resized to size×size, grey repeated to ``channels``."""

    def convert(img: Any) -> torch.Tensor:
        x = TF.to_tensor(img)
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            x = resize(x.unsqueeze(0), size)[0]
        if channels is not None and x.shape[0] != channels:
            if x.shape[0] == 1:
                x = x.repeat(channels, 1, 1)
            elif channels == 1:
                x = TF.rgb_to_grayscale(x)
            else:
                raise ValueError(f"cannot turn {x.shape[0]} channels into {channels}")
        return x.contiguous()

    return convert


class TensorPairs(TorchDataset):
    """A torchvision dataset seen as ``(image tensor, int label)`` pairs, optionally a subset."""

    def __init__(self, base: TorchDataset, convert: Callable[[Any], torch.Tensor],
                 indices: Sequence[int] | None = None) -> None:
        self.base = base
        self.convert = convert
        self.indices = list(indices) if indices is not None else None

    def __len__(self) -> int:
        return len(self.indices) if self.indices is not None else len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.indices is not None:
            i = self.indices[i]
        img, label = self.base[i]
        return self.convert(img), int(label)


def evenly_spaced(n: int, k: int | None) -> list[int] | None:
    """``k`` indices spread evenly over ``range(n)`` (all of them when k is None or ≥ n)."""
    if k is None or k >= n:
        return None
    if k <= 0:
        return []
    return sorted(set(torch.linspace(0, n - 1, k).round().long().tolist()))


# --- MNIST-format (IDX) datasets: MNIST, Fashion-MNIST -------------------------------------------

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def gunzip_missing(raw: Path, files: Sequence[str]) -> None:
    """Decompress ``<file>.gz`` next to each missing ``<file>`` (torchvision reads the raw IDX).

    The official archives are the ``.gz`` files; torchvision's own download decompresses them,
    so a folder filled by hand with the ``.gz`` files is decompressed the same way, atomically.
    """
    import gzip

    for name in files:
        target, packed = raw / name, raw / f"{name}.gz"
        if target.is_file() or not packed.is_file():
            continue
        with gzip.open(packed, "rb") as src:  # a truncated or unreadable archive: its own
            data = src.read()  # error, and nothing written
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as dst:
                dst.write(data)
            os.replace(tmp, target)
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            raise DatasetNotFoundError(  # it had read as "replace the damaged files"
                f"{packed}: its decompressed copy cannot be written beside it "
                f"({e.strerror}): decompress the .gz files there (gunzip -k), or copy the "
                f"folder somewhere writable") from None
        finally:  # a failed write leaves no NAME.PID.tmp in the data folder (a truncated
            if os.path.lexists(tmp):  # archive had left a 0-byte one on every run)
                tmp.unlink()


class IdxDataset:
    """Mixin for the torchvision MNIST family: ``<root>/<Folder>/raw/*-ubyte[.gz]``.

    Subclasses set ``tv_class`` (the torchvision class), ``title``, ``classes``, ``mean``/``std``
    (the customary grey-level statistics) and ``url`` (where the ``.gz`` files come from).
    """

    tv_class: Any = None
    title = ""
    url = ""
    classes: tuple[str, ...] = ()
    native = 28
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    root: str | None
    download: bool
    size: int
    channels: int
    normalize: bool

    def meta(self) -> Any:
        from bench.contracts import DatasetMeta

        mean, std = stats(self.mean, self.std, self.channels, self.normalize)
        return DatasetMeta((self.channels, self.size, self.size), len(self.classes), mean, std,
                           self.classes, pixel_mean=pixel_mean(self.mean, self.channels))

    def source(self) -> dict[str, Any]:  # the folder the reader opens, not all of the root
        root = data_root(self.root, self.registry_name)  # type: ignore[attr-defined]
        return folder_source(root / self.tv_class.__name__)

    def load(self, split: str) -> TensorPairs:
        check_split(split)
        name = self.registry_name  # type: ignore[attr-defined]
        root = data_root(self.root, name)
        folder = self.tv_class.__name__
        raw = root / folder / "raw"
        place = (f"put the four {self.title} files ({', '.join(f + '.gz' for f in IDX_FILES)}, "
                 f"from {self.url}) in {raw}")
        how = f"set `download: true` in the suite, or {place}"
        legacy = root / folder / "processed"
        if self.download:
            how = f"the download failed or was incomplete; or {place}"
        elif not all((legacy / f).is_file() for f in ("training.pt", "test.pt")):
            if raw.is_dir():
                gunzip_missing(raw, IDX_FILES)
            check_files(name, raw, IDX_FILES, how)
        base = load_cached(
            (name, str(root.resolve()), split),
            lambda: torchvision_call(name, lambda: self.tv_class(
                str(root), train=split == "train", download=self.download), how))
        return TensorPairs(base, to_tensor_image(self.size, self.channels))


# --- Checksums --------------------------------------------------------------------------------

VERIFY_PARAM = Param("verify", bool, True, identity=False,
                     help="check torchvision's md5 checksums of the official files")

# The parameter lists the torchvision-backed datasets share.
GREY_PARAMS = (
    ROOT_PARAM,
    DOWNLOAD_PARAM,
    Param("size", int, 28, low=8, high=256, help="side length after resizing"),
    Param("channels", int, 1, choices=(1, 3), help="3 repeats the grey channel"),
    NORMALIZE_PARAM,
)
"""MNIST-style IDX datasets: 28×28 grey images."""
COLOUR_PARAMS = (
    ROOT_PARAM,
    DOWNLOAD_PARAM,
    VERIFY_PARAM,
    Param("size", int, 32, low=8, high=256, help="side length after resizing"),
    NORMALIZE_PARAM,
)
"""Checksummed 32×32 RGB datasets: CIFAR-10/100, SVHN."""


def without_checksums(tv_class: Any, **tables: Any) -> Any:
    """A subclass of a torchvision dataset whose file tables carry no md5 (existence only).

    torchvision's CIFAR and SVHN readers check the md5 of every file even when nothing is
    downloaded (``check_integrity(path, md5)``; with ``md5=None`` it checks that the file
    exists). ``verify: false`` uses this subclass: the file names and the parsing code stay
    torchvision's own; only the checksum entries are blanked. That serves re-packed copies of
    the data and the test suite's hand-made files.
    """
    return type(f"Unverified{tv_class.__name__}", (tv_class,), dict(tables))


# --- CIFAR-10 / CIFAR-100: pickled python batches ---------------------------------------------


def cifar_without_checksums(tv_class: Any) -> Any:
    return without_checksums(
        tv_class,
        train_list=[[name, None] for name, _ in tv_class.train_list],
        test_list=[[name, None] for name, _ in tv_class.test_list],
        meta={**tv_class.meta, "md5": None})


class CifarDataset:
    """Mixin for torchvision's CIFAR readers: ``<root>/<base_folder>/`` with the python batches.

    Subclasses set ``tv_class``, ``title``, ``archive``, ``url``, ``classes`` and ``mean``/``std``.
    """

    tv_class: Any = None
    title = ""
    archive = ""
    url = ""
    classes: tuple[str, ...] = ()
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    root: str | None
    download: bool
    verify: bool
    size: int
    normalize: bool

    def meta(self) -> Any:
        from bench.contracts import DatasetMeta

        mean, std = stats(self.mean, self.std, 3, self.normalize)
        return DatasetMeta((3, self.size, self.size), len(self.classes), mean, std, self.classes,
                           pixel_mean=pixel_mean(self.mean, 3))

    def source(self) -> dict[str, Any]:  # the folder the reader opens, not all of the root
        root = data_root(self.root, self.registry_name)  # type: ignore[attr-defined]
        return folder_source(root / self.tv_class.base_folder)

    def load(self, split: str) -> TensorPairs:
        check_split(split)
        name = self.registry_name  # type: ignore[attr-defined]
        tv = self.tv_class
        root = data_root(self.root, name)
        folder = root / tv.base_folder
        files = [f for f, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
        place = (f"extract {self.archive} ({self.url}) in {root} so that "
                 f"{folder}{os.sep}{files[0]} exists")
        how = f"set `download: true` in the suite, or {place}"
        if not self.download:
            check_files(name, folder, files, how)
        if self.download:
            how = f"the download failed or was incomplete; or {place}"
        elif self.verify:
            how = (f"a file differs from the official {self.title} release (md5): replace it, or "
                   f"set `verify: false` to skip torchvision's checksums")
        cls = tv if self.verify else cifar_without_checksums(tv)
        base = load_cached(
            (name, str(root.resolve()), split, self.verify),
            lambda: torchvision_call(name, lambda: cls(
                str(root), train=split == "train", download=self.download), how))
        return TensorPairs(base, to_tensor_image(self.size, 3))
