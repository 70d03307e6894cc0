"""Bad files a fourth hunt found (2026-12-05): a lock that is no file, images PIL decodes
to a range RGB clips, an image of extreme aspect, and artifacts too large to read whole. Each
is one line and exit status 2, a warning line, or runs correctly, where it had hung, run out
of memory or given a silently wrong image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image, ImageFile

from bench.cli import main
from bench.datasets import torchvision_common
from bench.registry import DATASETS
from helpers import ROOT, TINY_SUITE, one_line, run_cli


def cli_one_line(*args: str) -> str:
    """``one_line`` in a fresh interpreter: a hang fails the test instead of the session."""
    done = run_cli(*args, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(lines) == 1 and lines[0].startswith("leakbench: error: "), done.stderr
    return lines[0]


def empty_store(folder: Path) -> Path:
    (folder / "records").mkdir(parents=True)
    return folder


def image_suite(tmp_path: Path, root: Path, size: int = 8) -> str:
    """A one-cell suite on the imagefolder ``root``."""
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "timeout": 60, "datasets": [
        {"imagefolder": {"root": str(root), "size": size}}]}))
    return str(path)


def run_args(tmp_path: Path, suite: str) -> list[str]:
    return ["run", suite, "--out", str(tmp_path / "out"), "--jobs", "0", "--quiet",
            "--no-leaderboard"]


def save_twice(image: Image.Image, folder: Path, suffix: str = "png") -> None:
    """``image`` as 0 and 1 in ``folder``: 0 is a test image (every 5th), 1 the first train."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        image.save(folder / f"{i}.{suffix}")


def imagefolder(root: Path, size: int = 8) -> torchvision_common.TensorPairs:
    """The train split of the imagefolder ``root``, read afresh."""
    torchvision_common.clear_cache()
    return DATASETS.get("imagefolder").cls(root=str(root), size=size).load("train")


# --- 1. the run lock -------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["merge", "run"])
def test_a_fifo_where_the_lock_belongs_is_one_line_not_a_hang(command, tmp_path):
    """``_read`` opened DIR/.lock with read_text(): a FIFO there blocked for ever."""
    out = tmp_path / "out"
    out.mkdir()
    os.mkfifo(out / ".lock")
    if command == "merge":
        args = ["merge", str(out), str(empty_store(tmp_path / "a"))]
    else:
        (tmp_path / "d" / "a").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (8, 8), (90 * i, 0, 0)).save(tmp_path / "d" / "a" / f"{i}.png")
        args = ["run", image_suite(tmp_path, tmp_path / "d"), "--out", str(out), "--jobs", "0"]
    line = cli_one_line(*args)
    assert str(out / ".lock") in line and "not a regular file" in line


@pytest.mark.parametrize("target", ["/dev/zero", "big"])
def test_a_lock_that_is_a_device_or_too_large_is_refused_unread(target, tmp_path):
    """A link to /dev/zero was read until memory ran out; a lock is a few hundred bytes.
    Run in a child with 1 GB of address space, so that a regression fails, not the machine."""
    out = tmp_path / "out"
    out.mkdir()
    if target == "big":
        with open(out / ".lock", "wb") as f:
            f.truncate(8 << 30)  # sparse: no disk
    else:
        (out / ".lock").symlink_to(target)
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from bench.lock import LockedError, RunLock\n"
            "try:\n"
            f"    RunLock({str(out)!r}).acquire()\n"
            "except LockedError as e:\n"
            "    print(e)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr
    assert str(out / ".lock") in done.stdout
    assert ("not a regular file" if target != "big" else "bytes") in done.stdout
    assert os.path.lexists(out / ".lock")  # not ours to delete


# --- 2. images decoded beyond 8 bits ---------------------------------------------------------

def test_a_16_bit_grey_png_is_read_scaled_not_clipped_to_white(tmp_path):
    """PIL opens a 16-bit PNG as mode I;16; converting it to RGB clipped every value above 255
    to white: a constant image, silently."""
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000 + 500
    image = Image.fromarray(values)
    assert image.mode.startswith("I;16")
    save_twice(image, tmp_path / "a")
    with Image.open(tmp_path / "a" / "1.png") as check:
        assert check.mode in ("I;16", "I;16B", "I")
    x, _ = imagefolder(tmp_path)[0]
    expected = torch.from_numpy(values.astype(np.float32) / 65535)
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32
    for channel in x:
        assert torch.allclose(channel, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["F", "I"])
def test_an_image_of_no_known_range_is_one_line_naming_it(mode, tmp_path, capsys):
    """A float TIFF (mode F) or 32-bit integer one (mode I) was clipped to RGB as well."""
    dtype = np.float32 if mode == "F" else np.int32
    values = (np.arange(64).reshape(8, 8) * 3000).astype(dtype)
    save_twice(Image.fromarray(values), tmp_path / "d" / "a", "tif")
    line = one_line(capsys, *run_args(tmp_path, image_suite(tmp_path, tmp_path / "d")))
    assert ".tif" in line and f"mode {mode}" in line


def test_a_folder_of_gifs_names_the_extensions_read(tmp_path, capsys):
    save_twice(Image.new("RGB", (8, 8)), tmp_path / "d" / "a", "gif")
    line = one_line(capsys, *run_args(tmp_path, image_suite(tmp_path, tmp_path / "d")))
    assert "holds no image" in line and ".png" in line and ".jpg" in line  # the class
    assert ".gif, are not read" in line  # folder's check (7931fb0) comes first now


# --- 3. extreme aspect ------------------------------------------------------------------------

def test_an_image_of_extreme_aspect_is_cropped_to_its_centre_not_resized_whole(tmp_path,
                                                                               monkeypatch):
    """A 1x1,000,000 PNG (32 KB) was resized on its short side to 24x24,000,000 (1.7 GB) before
    the centre crop: the crop comes first when the resized image would be that long."""
    from bench.datasets import imagefolder as module

    width = 100_000
    row = (np.arange(width) * 255 // (width - 1)).astype(np.uint8)
    save_twice(Image.fromarray(row[None, :]), tmp_path / "a")
    sides = []
    resize = module.TF.resize

    def spy(img, *args, **kwargs):
        resized = resize(img, *args, **kwargs)
        sides.append(max(module.TF.get_image_size(resized)))
        return resized

    monkeypatch.setattr(module.TF, "resize", spy)
    x, _ = imagefolder(tmp_path)[0]
    assert x.shape == (3, 8, 8)
    assert sides and max(sides) <= 4096  # the loader's MAX_RESIZED_SIDE
    centre = row[width // 2] / 255
    assert torch.allclose(x, torch.full_like(x, centre), atol=2 / 255)


# --- 4. artifacts too large to read whole ----------------------------------------------------

def store_with_picture(folder: Path) -> tuple[Path, dict]:
    """A store of one committed record, its picture copied along."""
    src = sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]
    record = json.loads(src.read_text())
    (folder / "records").mkdir(parents=True)
    (folder / "records" / src.name).write_text(json.dumps(record))
    (folder / "cells").mkdir()
    picture = folder / record["picture"]
    picture.write_bytes((ROOT / "results" / "quick" / record["picture"]).read_bytes())
    record.pop("arrays", None)
    (folder / "records" / src.name).write_text(json.dumps(record))
    return picture, record


def test_merge_leaves_out_an_artifact_larger_than_a_cell_writes(tmp_path, capsys, monkeypatch):
    """merge read each artifact whole: an 8 GB sparse cells/*.png was a MemoryError."""
    import bench.merge

    picture, record = store_with_picture(tmp_path / "a")
    monkeypatch.setattr(bench.merge, "MAX_ARTIFACT_BYTES", 100, raising=False)
    assert picture.stat().st_size > 100
    assert main(["merge", str(tmp_path / "out"), str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert str(picture) in err and "larger than" in err
    assert not (tmp_path / "out" / record["picture"]).exists()
    assert (tmp_path / "out" / "records" / f"{record['cell_id']}.json").exists()


def test_merge_refuses_a_sparse_8_gb_picture_unread_and_copies_a_sound_one(tmp_path, capsys):
    picture, record = store_with_picture(tmp_path / "a")
    sound = picture.read_bytes()
    assert main(["merge", str(tmp_path / "out"), str(tmp_path / "a")]) == 0
    assert (tmp_path / "out" / record["picture"]).read_bytes() == sound
    capsys.readouterr()
    store_with_picture(tmp_path / "b")
    os.truncate(tmp_path / "b" / record["picture"], 8 << 30)
    assert main(["merge", str(tmp_path / "out2"), str(tmp_path / "b")]) == 0
    assert "larger than" in capsys.readouterr().err
    assert not (tmp_path / "out2" / record["picture"]).exists()


def test_site_warns_about_a_picture_of_too_many_pixels_without_decoding_it(tmp_path,
                                                                           monkeypatch):
    """site decoded any picture whole: a 12000x12000 PNG took 1.35 GB and was copied."""
    from bench.site import gallery

    picture, record = store_with_picture(tmp_path / "a")
    Image.new("RGB", (3000, 3000)).save(picture)  # 9 million pixels, a few KB
    monkeypatch.setattr(gallery, "MAX_GRID_PIXELS", 1_000_000, raising=False)
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    warned = []
    monkeypatch.setattr(gallery, "warn", warned.append)
    assert gallery.write_shot(record, tmp_path / "a", tmp_path / "pages") is None
    assert not loads and not (tmp_path / "pages" / "img").exists()
    [line] = warned
    assert record["picture"] in line and "3000x3000" in line and "shown without it" in line


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` RGB pixels and holds none (PIL opens it)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("what", ["12000x12000", "bytes"])
def test_site_leaves_out_a_huge_or_long_picture_with_one_warning(what, tmp_path, capsys):
    """No two-line DecompressionBombWarning from PIL, nothing decoded nor read whole: a
    picture claiming 144 million pixels, or a small one followed by 8 GB (sparse)."""
    from bench.site import gallery

    picture, record = store_with_picture(tmp_path / "a")
    if what == "bytes":
        os.truncate(picture, 8 << 30)
    else:
        picture.write_bytes(png_header(12000, 12000))
    assert gallery.write_shot(record, tmp_path / "a", tmp_path / "pages") is None
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"leakbench: warning: cell {record['cell_id']}: cannot read ")
    assert (what if what != "bytes" else str(8 << 30)) in line
