"""The torchvision-backed datasets, fed tiny files written here in each real on-disk format.

Every file goes through torchvision's own parsing code (IDX, pickled CIFAR batches, SVHN's .mat,
an image folder); nothing is downloaded (any attempt fails the test).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from bench.datasets import torchvision_common
from bench.datasets.torchvision_common import DATA_ENV, DatasetNotFoundError
from bench.registry import DATASETS, LeakbenchError


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fresh cache, no inherited data folder, and any download attempt is an error."""
    torchvision_common.clear_cache()
    monkeypatch.delenv(DATA_ENV, raising=False)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a dataset tried to download")

    import urllib.request

    import torchvision.datasets.cifar
    import torchvision.datasets.mnist
    import torchvision.datasets.svhn
    import torchvision.datasets.utils

    for module in (torchvision.datasets.utils, torchvision.datasets.mnist,
                   torchvision.datasets.cifar, torchvision.datasets.svhn):
        for fn in ("download_url", "download_and_extract_archive"):
            if hasattr(module, fn):
                monkeypatch.setattr(module, fn, no_network)
    monkeypatch.setattr(urllib.request, "urlopen", no_network)


def make(name: str, **params: object):
    return DATASETS.get(name).cls(**params)


def rng_images(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def items(ds) -> tuple[torch.Tensor, list[int]]:
    pairs = [ds[i] for i in range(len(ds))]
    return torch.stack([p[0] for p in pairs]), [p[1] for p in pairs]


# --- MNIST / Fashion-MNIST: IDX files ------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """The IDX format: magic (0, 0, 0x08 = ubyte, ndim), big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist_like(root: Path, folder: str, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    data = {"train": (rng_images(1, (6, 28, 28)), np.array([3, 1, 4, 1, 5, 9], np.uint8)),
            "test": (rng_images(2, (4, 28, 28)), np.array([2, 6, 5, 3], np.uint8))}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = data[split]
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return data


@pytest.mark.parametrize("name,folder,gz", [("mnist", "MNIST", False),
                                            ("fashion-mnist", "FashionMNIST", True)])
def test_idx_files_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str,
                              folder: str, gz: bool) -> None:
    data = write_mnist_like(tmp_path, folder, gz)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))  # the environment variable is the root
    ds = make(name)
    for split in ("train", "test"):
        loaded = ds.load(split)
        x, y = items(loaded)
        images, labels = data[split]
        assert x.dtype == torch.float32 and x.shape == (len(labels), 1, 28, 28)
        assert torch.equal(x, torch.from_numpy(images).float().unsqueeze(1) / 255)
        assert y == labels.tolist()
    if gz:  # the .gz files were decompressed next to themselves, as torchvision's download does
        assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").is_file()
    meta = ds.meta()
    assert meta.shape == (1, 28, 28) and meta.num_classes == 10 == len(meta.classes)
    assert meta.mean == (0.0,) and meta.std == (1.0,)


def test_mnist_resize_channels_and_normalisation(tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "MNIST", gz=False)
    ds = make("mnist", root=str(tmp_path), size=32, channels=3, normalize=True)
    x, label = ds.load("train")[0]
    assert x.shape == (3, 32, 32) and label == 3
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0  # load stays in [0,1]
    meta = ds.meta()
    assert meta.shape == (3, 32, 32)
    assert meta.mean == pytest.approx((0.1307,) * 3, abs=1e-4)
    assert meta.std == pytest.approx((0.3081,) * 3, abs=1e-4)
    fashion = make("fashion-mnist", normalize=True).meta()
    assert fashion.classes[0] == "T-shirt/top" and fashion.mean == pytest.approx((0.2860,))


# --- CIFAR-10 / CIFAR-100: pickled python batches ------------------------------------------------


def write_pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def cifar_rows(seed: int, n: int) -> np.ndarray:
    """n images as the archive stores them: rows of 3072 bytes, the R, G then B planes."""
    return rng_images(seed, (n, 3072))


def write_cifar10(root: Path) -> dict[str, tuple[np.ndarray, list[int]]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_rows, train_labels = [], []
    for b in range(1, 6):
        rows, labels = cifar_rows(b, 2), [b % 10, (3 * b) % 10]
        write_pickle(folder / f"data_batch_{b}", {"batch_label": f"training batch {b} of 5",
                                                  "labels": labels, "data": rows,
                                                  "filenames": [f"f{b}_{i}.png" for i in range(2)]})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = cifar_rows(9, 3), [7, 0, 2]
    write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1",
                                         "labels": test_labels, "data": test_rows,
                                         "filenames": ["t0.png", "t1.png", "t2.png"]})
    from bench.datasets.cifar10 import CIFAR10

    write_pickle(folder / "batches.meta", {"label_names": list(CIFAR10.classes),
                                           "num_cases_per_batch": 2, "num_vis": 3072})
    return {"train": (np.concatenate(train_rows), train_labels), "test": (test_rows, test_labels)}


def as_images(rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rows.reshape(-1, 3, 32, 32).copy()).float() / 255


def test_cifar10_batches_round_trip(tmp_path: Path) -> None:
    data = write_cifar10(tmp_path)
    ds = make("cifar10", root=str(tmp_path), verify=False)
    for split in ("train", "test"):
        x, y = items(ds.load(split))
        rows, labels = data[split]
        assert x.dtype == torch.float32 and x.shape == (len(labels), 3, 32, 32)
        assert torch.equal(x, as_images(rows))
        assert y == labels
    meta = ds.meta()
    assert meta.shape == (3, 32, 32) and meta.num_classes == 10 and meta.classes[0] == "airplane"


def test_cifar10_through_the_harness_batch_sampler(tmp_path: Path) -> None:
    from bench.data import sample_batch

    data = write_cifar10(tmp_path)
    ds = make("cifar10", root=str(tmp_path), verify=False, size=16)
    x, y = sample_batch(ds, 4, torch.Generator().manual_seed(0))
    assert x.shape == (4, 3, 16, 16) and y.dtype == torch.long
    assert set(y.tolist()) <= set(data["train"][1])


def test_cifar10_checksums_are_checked_by_default(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"md5.*verify: false"):
        make("cifar10", root=str(tmp_path)).load("train")


def test_cifar100_files_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.datasets.cifar100 import FINE_LABELS

    assert len(FINE_LABELS) == 100 == len(set(FINE_LABELS)) and list(FINE_LABELS) == sorted(
        FINE_LABELS)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    train, test = cifar_rows(11, 4), cifar_rows(12, 2)
    write_pickle(folder / "train", {"data": train, "fine_labels": [99, 0, 42, 7],
                                    "coarse_labels": [19, 4, 2, 1], "filenames": list("abcd"),
                                    "batch_label": "training batch 1 of 1"})
    write_pickle(folder / "test", {"data": test, "fine_labels": [5, 64],
                                   "coarse_labels": [0, 3], "filenames": list("ef"),
                                   "batch_label": "testing batch 1 of 1"})
    write_pickle(folder / "meta", {"fine_label_names": list(FINE_LABELS),
                                   "coarse_label_names": [f"c{i}" for i in range(20)]})
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    ds = make("cifar100", verify=False, normalize=True)
    x, y = items(ds.load("train"))
    assert torch.equal(x, as_images(train)) and y == [99, 0, 42, 7]
    x, y = items(ds.load("test"))
    assert torch.equal(x, as_images(test)) and y == [5, 64]
    meta = ds.meta()
    assert meta.num_classes == 100 and meta.classes[99] == "worm"
    assert meta.mean == pytest.approx((0.5071, 0.4866, 0.4412), abs=1e-4)


# --- SVHN: .mat files ----------------------------------------------------------------------------


def test_svhn_mat_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "SVHN"  # $LEAKBENCH_DATA/SVHN
    folder.mkdir()
    images = {"train": rng_images(21, (32, 32, 3, 5)), "test": rng_images(22, (32, 32, 3, 2))}
    labels = {"train": np.array([[10], [1], [2], [10], [9]], np.uint8),  # 10 is the digit 0
              "test": np.array([[3], [10]], np.uint8)}
    for split in ("train", "test"):
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": images[split], "y": labels[split]})
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    ds = make("svhn", verify=False)
    x, y = items(ds.load("train"))
    expected = torch.from_numpy(images["train"]).permute(3, 2, 0, 1).float() / 255
    assert x.shape == (5, 3, 32, 32) and torch.equal(x, expected)
    assert y == [0, 1, 2, 0, 9]
    x, y = items(ds.load("test"))
    assert y == [3, 0] and x.shape == (2, 3, 32, 32)
    with pytest.raises(DatasetNotFoundError, match="md5"):
        torchvision_common.clear_cache()
        make("svhn").load("train")


# --- Image folders -------------------------------------------------------------------------------


def write_pngs(folder: Path, classes: dict[str, int], side: int, seed: int) -> dict[str, list]:
    out: dict[str, list] = {}
    for k, (cls, n) in enumerate(sorted(classes.items())):
        (folder / cls).mkdir(parents=True)
        out[cls] = []
        for i in range(n):
            pixels = rng_images(seed + 100 * k + i, (side, side, 3))
            Image.fromarray(pixels).save(folder / cls / f"{cls}_{i:04d}.png")
            out[cls].append(pixels)
    return out


def test_imagefolder_one_folder_split_and_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "lfw"
    pixels = write_pngs(root, {"alice": 5, "bob": 5, "carol": 5}, side=8, seed=0)
    ds = make("imagefolder", root=str(root), size=8)
    meta = ds.meta()
    assert meta.classes == ("alice", "bob", "carol") and meta.num_classes == 3
    train, test = ds.load("train"), ds.load("test")
    assert len(train) == 12 and len(test) == 3  # every 5th file (sorted order) is a test image
    flat = [(torch.from_numpy(p).permute(2, 0, 1).float() / 255, label)
            for label, cls in enumerate(sorted(pixels)) for p in pixels[cls]]
    x, y = items(test)
    for j, i in enumerate((0, 5, 10)):
        assert torch.equal(x[j], flat[i][0]) and y[j] == flat[i][1]
    x, y = items(train)
    assert torch.equal(x[0], flat[1][0]) and y == [0] * 4 + [1] * 4 + [2] * 4
    assert len(make("imagefolder", root=str(root), size=8, max_images=5).load("train")) == 5


def test_imagefolder_of_one_image_says_it_is_too_few_to_split(tmp_path: Path) -> None:
    """One readable image in a class sub-folder: it is the test split's, and the train split
    was refused as "no train images found …: check that the images are readable and in class
    sub-folders", which they were."""
    from bench.datasets.torchvision_common import DatasetNotFoundError

    root = tmp_path / "one"
    write_pngs(root, {"a": 1}, side=8, seed=0)
    ds = make("imagefolder", root=str(root), size=8)
    assert len(ds.load("test")) == 1
    with pytest.raises(DatasetNotFoundError, match=r"1 image\(s\) under .*, too few to split"):
        ds.load("train")


def test_imagefolder_reads_regular_files_only_and_refuses_a_huge_image(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """A FIFO named like an image blocked the run for ever; an image PIL warns is huge (over
    its MAX_IMAGE_PIXELS, decoded whole: 1.9 GB at 144 million pixels) is an error, as one
    twice that size already was, not a two-line Python warning."""
    import os

    root = tmp_path / "lfw"
    write_pngs(root, {"alice": 5, "bob": 5}, side=12, seed=0)
    os.mkfifo(root / "alice" / "alice_0002b.png")  # sorts among alice's images
    ds = make("imagefolder", root=str(root), size=8)
    train = ds.load("train")
    assert len(train) + len(ds.load("test")) == 10  # the FIFO is no image
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 12x12 = 144: PIL warns (< 200)
    torchvision_common.clear_cache()
    with pytest.raises(Image.DecompressionBombWarning):
        make("imagefolder", root=str(root), size=8).load("train")[0]


def test_imagefolder_split_folders_resize_and_env(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "faces"  # $LEAKBENCH_DATA/<folder>
    write_pngs(root / "train", {"a": 2, "b": 3}, side=12, seed=5)
    write_pngs(root / "val", {"b": 1}, side=12, seed=9)  # a class absent from val is fine
    wide = rng_images(3, (10, 20, 3))
    wide[:, 3:17] = 255  # the centre crop (columns 5..15 of 20) keeps only the white middle
    Image.fromarray(wide).save(root / "val" / "b" / "wide.png")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    ds = make("imagefolder", folder="faces", size=8)
    assert ds.meta().classes == ("a", "b")
    x, y = items(ds.load("train"))
    assert x.shape == (5, 3, 8, 8) and y == [0, 0, 1, 1, 1]
    x, y = items(ds.load("test"))
    assert x.shape == (2, 3, 8, 8) and y == [1, 1]  # labels follow train's classes
    assert float(x[1].min()) > 0.99  # "wide.png" sorts after "b_0000.png"


# --- Missing data --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,where,hint", [
    ("mnist", "MNIST/raw", "train-images-idx3-ubyte.gz"),
    ("fashion-mnist", "FashionMNIST/raw", "t10k-labels-idx1-ubyte.gz"),
    ("cifar10", "cifar-10-batches-py", "cifar-10-python.tar.gz"),
    ("cifar100", "cifar-100-python", "cifar-100-python.tar.gz"),
    ("svhn", "SVHN", "train_32x32.mat"),
    ("imagefolder", "imagefolder", "class sub-folders"),
])
def test_missing_data_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          name: str, where: str, hint: str) -> None:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    with pytest.raises(LeakbenchError) as err:
        make(name).load("train")
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, DatasetNotFoundError)
    assert str(tmp_path / where) in message and hint in message
    if name != "imagefolder":
        assert "download: true" in message


def test_no_data_folder_at_all_and_meta_without_files(tmp_path: Path) -> None:
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"):
        meta = make(name).meta()  # the harness calls meta() at suite expansion: no file needed
        assert meta.num_classes in (10, 100) and len(meta.classes) == meta.num_classes
        with pytest.raises(DatasetNotFoundError, match=DATA_ENV):
            make(name).load("test")
    with pytest.raises(DatasetNotFoundError, match="no class sub-folders"):
        (tmp_path / "empty").mkdir()
        make("imagefolder", root=str(tmp_path / "empty")).meta()


def test_download_only_when_asked_and_its_failure_is_one_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import urllib.error

    import torchvision.datasets.cifar

    calls: list[str] = []

    def offline(url: str, *args: object, **kwargs: object) -> None:
        calls.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="download: true"):
        make("cifar10", root=str(tmp_path)).load("train")
    assert calls == []  # download defaults to false
    with pytest.raises(DatasetNotFoundError) as err:
        make("cifar10", root=str(tmp_path), download=True).load("train")
    assert len(calls) == 1 and calls[0].endswith("cifar-10-python.tar.gz")
    assert "download failed" in str(err.value) and "\n" not in str(err.value)


def test_imagefolder_split_and_class_folders_are_what_they_say(tmp_path: Path) -> None:
    """A datasets hunt: train/ beside validation/ was read as two classes named after the
    splits (each label its split), train/ alone as one class, a hidden .ipynb_checkpoints/
    as class 0 (every real label shifted by one), and an empty folder as a class no image
    could be drawn of."""
    root = tmp_path / "split"
    write_pngs(root / "train", {"cat": 3, "dog": 3}, side=8, seed=0)
    write_pngs(root / "validation", {"cat": 1, "dog": 1}, side=8, seed=9)
    (root / "train" / ".ipynb_checkpoints").mkdir()
    ds = make("imagefolder", root=str(root), size=8)
    assert ds.meta().classes == ("cat", "dog")
    assert items(ds.load("train"))[1] == [0, 0, 0, 1, 1, 1]
    assert items(ds.load("test"))[1] == [0, 1]
    alone = tmp_path / "alone"
    write_pngs(alone / "train", {"cat": 3}, side=8, seed=0)
    with pytest.raises(DatasetNotFoundError, match=r"holds train/ but not train/ beside a "
                                                   r"test/ \(or val/, valid/, validation/\)"):
        make("imagefolder", root=str(alone), size=8).meta()
    voc = tmp_path / "voc"  # a class named train beside others is a class
    write_pngs(voc, {"aeroplane": 5, "bus": 5, "train": 5}, side=8, seed=0)
    assert make("imagefolder", root=str(voc), size=8).meta().classes == (
        "aeroplane", "bus", "train")
    empty = tmp_path / "empty"
    write_pngs(empty, {"cat": 3}, side=8, seed=0)
    (empty / "dog").mkdir()
    (empty / "dog" / "notes.txt").write_text("no image")
    with pytest.raises(DatasetNotFoundError, match=r"class folder .*dog holds no image"):
        make("imagefolder", root=str(empty), size=8).meta()


def test_idx_gz_files_on_a_read_only_folder_or_truncated_say_so(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A datasets hunt: .gz files on a read-only mount were refused as "damaged files" (the
    decompressed copy could not be written beside them), and a truncated archive left a
    0-byte NAME.PID.tmp in the data folder on every run."""
    import errno

    write_mnist_like(tmp_path, "MNIST", gz=True)
    raw = tmp_path / "MNIST" / "raw"
    monkeypatch.setenv(DATA_ENV, str(tmp_path))

    def read_only(path, mode="r", *args, **kwargs):
        if "w" in mode:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return open(path, mode, *args, **kwargs)

    monkeypatch.setattr(torchvision_common, "open", read_only, raising=False)
    with pytest.raises(DatasetNotFoundError, match=r"train-images-idx3-ubyte\.gz: its "
                       r"decompressed copy cannot be written beside it \(Read-only file "
                       r"system\): decompress the \.gz files there \(gunzip -k\)"):
        make("mnist").load("train")
    monkeypatch.undo()
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    packed = raw / "train-images-idx3-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:-40])  # truncated: gzip's EOFError
    with pytest.raises(Exception):  # noqa: B017 - whatever the archive's error, no debris
        make("mnist").load("train")
    assert sorted(p.name for p in raw.iterdir() if p.suffix == ".tmp") == []


def test_textfolder_reads_one_sentence_per_line_and_skips_hidden_folders(tmp_path: Path
                                                                        ) -> None:
    """A datasets hunt: a Penn Treebank-style file (lower case, no final stops) became one
    paragraph, 500 lines two sentences, in silence; `lines: true` reads a sentence per line.
    A notebook's .ipynb_checkpoints/*-checkpoint.txt had been a topic of its own."""
    root = tmp_path / "ptb"
    root.mkdir()
    words = ["the", "market", "rose", "sharply", "after", "news", "of", "a", "merger"]
    lines = [" ".join(words[(i + k) % len(words)] for k in range(6)) for i in range(40)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / ".ipynb_checkpoints").mkdir()
    (root / ".ipynb_checkpoints" / "train-checkpoint.txt").write_text("\n".join(lines))
    prose = make("textfolder", root=str(root)).corpus()
    assert len(prose) == 1 and {t for t, _ in prose} == {"train"}  # one paragraph
    per_line = make("textfolder", root=str(root), lines=True).corpus()
    assert [s for _, s in per_line] == lines and {t for t, _ in per_line} == {"train"}
