"""Reconstruction pictures for the site: each private image above its matched reconstruction,
enlarged by nearest neighbour so a 16-pixel digit is large enough to see, labelled with the
pair's PSNR.

The pairs come from the cell's ``arrays`` file (uint8 originals and matched reconstructions,
see :func:`bench.pictures.arrays_bytes`); a cell with only the ``picture`` grid shows that grid
enlarged by the browser; a cell with neither (skipped, failed, or a modality without images)
has no shot, and its page says so. An artifact outside the results folder or one that does not
read as an image is treated as absent (with a warning), so one bad file costs one picture, not
the build; so is a grid of more than ``MAX_GRID_PIXELS`` pixels or ``MAX_GRID_BYTES`` bytes,
judged by its header and size before it is decoded or read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.metrics import get_metric
from bench.pictures import artifact_path, png_bytes, read_arrays
from bench.registry import warn

MIN_SIDE = 128  # pixels: every shown image is enlarged by an integer factor to at least this
MAX_PAIRS = 64  # pairs shown per cell (a hand-made arrays file of 20 000 gave 40 000 PNGs)
MAX_SHOWN_SIDE = 1024  # pixels of a stored image; larger is no reconstruction of this field
IMAGES = "img"  # the folder, under a suite's pages, of the enlarged pictures
MAX_GRID_PIXELS = 1 << 26
"""A picture grid's pixels at most, twice a grid of 64 pairs of 512-pixel images: a 12000x12000
PNG was decoded whole (1.35 GB) and copied."""
MAX_GRID_BYTES = 4 * MAX_GRID_PIXELS  # its file's: an uncompressed RGBA PNG of as many pixels


@dataclass
class Pair:
    """One private image and its matched reconstruction (paths relative to the suite's pages)."""

    original: str
    reconstruction: str
    score: str  # e.g. "PSNR 43.99 dB", empty where the record has no per-image value


@dataclass
class Shot:
    """What the site shows of one cell's reconstruction."""

    cell_id: str
    size: tuple[int, int]  # displayed width and height of each image (or of the grid), pixels
    pairs: list[Pair] = field(default_factory=list)
    grid: str | None = None  # fallback: the record's picture grid, when there are no arrays


def _enlarge(array: np.ndarray) -> Image.Image:
    """(C, H, W) uint8 → an RGB or greyscale image enlarged by nearest neighbour."""
    channels, height, width = array.shape
    factor = max(1, -(-MIN_SIDE // max(height, width)))
    pixels = array.transpose(1, 2, 0)
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels[:, :, :3])
    return image.resize((width * factor, height * factor), Image.Resampling.NEAREST)


def _scores(record: dict[str, Any], n: int) -> list[str]:
    psnr = get_metric("psnr")
    values = ((record.get("metrics") or {}).get("per_image") or {}).get(psnr.name) or []
    if len(values) != n:
        return [""] * n
    return [f"{psnr.label} {psnr.format(v)}" + (f" {psnr.unit}" if psnr.unit else "")
            for v in values]


def _pairs(record: dict[str, Any], arrays: Path) -> tuple[Shot, dict[str, bytes]] | None:
    """The enlarged pairs of an arrays file, or None when it holds no image pairs."""
    cell = record["cell_id"]
    data = read_arrays(arrays, mapped=True)  # only the pairs shown are read
    if not (data.ndim == 5 and data.shape[0] == 2 and data.shape[1] > 0
            and data.shape[2] in (1, 3, 4) and data.dtype == np.uint8):
        return None
    if max(data.shape[3:]) > MAX_SHOWN_SIDE:
        raise ValueError(f"images of {data.shape[3]}x{data.shape[4]} pixels, above the "
                         f"{MAX_SHOWN_SIDE} a picture shows")
    if data.shape[1] > MAX_PAIRS:
        warn(f"cell {cell}: {data.shape[1]} image pairs; the first {MAX_PAIRS} are shown")
    shot, files = Shot(cell, (0, 0)), {}
    shown = zip(_scores(record, data.shape[1]), data[0, :MAX_PAIRS], data[1, :MAX_PAIRS])
    for i, (score, original, recon) in enumerate(shown):
        names = (f"{IMAGES}/{cell}_{i}o.png", f"{IMAGES}/{cell}_{i}r.png")
        for name, array in zip(names, (original, recon)):
            image = _enlarge(array)
            files[name] = png_bytes(image)
        shot.size = image.size
        shot.pairs.append(Pair(*names, score))
    return shot, files


def _grid(cell: str, picture: Path) -> tuple[Shot, dict[str, bytes]]:
    """The record's picture grid, copied (a PNG) or converted; ValueError, before it is decoded
    or read, for one larger than a grid a cell draws."""
    name = f"{IMAGES}/{cell}.png"
    with warnings.catch_warnings():  # PIL's own warning, at 89 million pixels: judged below
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(picture)  # reads the header only
    with image:
        width, height = image.size
        if width * height > MAX_GRID_PIXELS:
            raise ValueError(f"{width}x{height} pixels, above the {MAX_GRID_PIXELS} a picture "
                             "shows")
        if picture.stat().st_size > MAX_GRID_BYTES:
            raise ValueError(f"{picture.stat().st_size} bytes, above the {MAX_GRID_BYTES} a "
                             "picture shows")
        image.load()  # a truncated file fails here, not in the browser
        size = image.size
        data = picture.read_bytes() if image.format == "PNG" else png_bytes(image)
    factor = max(1, -(-2 * MIN_SIDE // max(size)))
    return Shot(cell, (size[0] * factor, size[1] * factor), grid=name), {name: data}


def write_shot(record: dict[str, Any], results: Path, pages: Path) -> Shot | None:
    """Write the enlarged pictures of one cell under ``pages/img/`` and describe them; None
    when the record has no readable image artifact inside ``results`` (an unreadable one is
    warned about: the cell is shown without a picture)."""
    cell = record["cell_id"]
    for key in ("arrays", "picture"):
        path = artifact_path(results, record.get(key), cell)
        if path is None:
            continue
        try:
            found = _pairs(record, path) if key == "arrays" else _grid(cell, path)
        except (OSError, ValueError, TypeError, EOFError, Image.DecompressionBombError) as e:
            warn(f"cell {cell}: cannot read {record[key]} ({type(e).__name__}: {e}); "
                 "shown without it")
            continue
        if found is not None:
            shot, files = found
            (pages / IMAGES).mkdir(parents=True, exist_ok=True)
            for name, data in files.items():
                (pages / name).write_bytes(data)
            return shot
    return None
