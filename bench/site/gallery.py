"""Reconstruction pictures for the site: each private image above its matched reconstruction,
enlarged by nearest neighbour so a 16-pixel digit is large enough to see, labelled with the
pair's PSNR.

The pairs come from the cell's ``arrays`` file (uint8 originals and matched reconstructions,
see :func:`bench.pictures.arrays_bytes`); a cell with only the ``picture`` grid shows that grid
enlarged by the browser; a cell with neither (skipped, failed, or a modality without images)
has no shot, and its page says so.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bench.metrics import get_metric
from bench.pictures import png_bytes

MIN_SIDE = 128  # pixels: every shown image is enlarged by an integer factor to at least this
IMAGES = "img"  # the folder, under a suite's pages, of the enlarged pictures


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


def write_shot(record: dict[str, Any], results: Path, pages: Path) -> Shot | None:
    """Write the enlarged pictures of one cell under ``pages/img/`` and describe them; None
    when the record has no readable image artifact."""
    cell = record["cell_id"]
    arrays = results / record["arrays"] if record.get("arrays") else None
    if arrays is not None and arrays.is_file():
        data = np.load(arrays, allow_pickle=False)
        if data.ndim == 5 and data.shape[0] == 2 and data.dtype == np.uint8:
            (pages / IMAGES).mkdir(parents=True, exist_ok=True)
            shot = Shot(cell, (0, 0))
            for i, (score, original, recon) in enumerate(zip(_scores(record, data.shape[1]),
                                                             data[0], data[1])):
                names = (f"{IMAGES}/{cell}_{i}o.png", f"{IMAGES}/{cell}_{i}r.png")
                for name, array in zip(names, (original, recon)):
                    image = _enlarge(array)
                    (pages / name).write_bytes(png_bytes(image))
                shot.size = image.size
                shot.pairs.append(Pair(*names, score))
            return shot
    picture = results / record["picture"] if record.get("picture") else None
    if picture is not None and picture.is_file():
        (pages / IMAGES).mkdir(parents=True, exist_ok=True)
        name = f"{IMAGES}/{cell}.png"
        shutil.copyfile(picture, pages / name)
        with Image.open(picture) as image:
            size = image.size
        factor = max(1, -(-2 * MIN_SIDE // max(size)))
        return Shot(cell, (size[0] * factor, size[1] * factor), grid=name)
    return None
