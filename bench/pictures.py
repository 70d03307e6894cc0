"""Pictures: a PNG grid per cell, originals (top) above their matched reconstructions (bottom)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bench.registry import warn
from bench.store import PICTURES

MIN_SIDE = 64  # small images are enlarged (nearest neighbour) so the grid stays legible


def grid_image(originals01: torch.Tensor, recon01: torch.Tensor, order: list[int]) -> Image.Image:
    recon = recon01[torch.as_tensor(order)] if len(recon01) == len(originals01) else recon01
    both = torch.cat([originals01, recon]).float().clamp(0, 1)
    if both.shape[1] == 1:
        both = both.repeat(1, 3, 1, 1)
    side = both.shape[-1]
    if side < MIN_SIDE:
        factor = -(-MIN_SIDE // side)
        both = torch.nn.functional.interpolate(both, scale_factor=factor, mode="nearest")
    from torchvision.utils import make_grid  # imported on use: it takes ~1 s (load bound)

    grid = make_grid(both, nrow=len(originals01), padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def arrays_bytes(originals01: torch.Tensor, recon01: torch.Tensor, order: list[int]) -> bytes:
    """A plain .npy, uint8 (2, N, C, H, W): originals and their matched reconstructions, for
    metrics pooled over cells (FID/KID). Its bytes depend on the data only."""
    import numpy as np

    recon = recon01[torch.as_tensor(order)] if len(recon01) == len(originals01) else recon01
    if recon.shape != originals01.shape:
        raise ValueError("reconstruction and batch shapes differ")
    both = torch.stack([originals01.float(), recon.float()]).clamp(0, 1)
    array = (both * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def cell_artifacts(cell_id: str, originals01: torch.Tensor, recon01: torch.Tensor,
                   order: list[int]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The record fields and the files of a scored cell: ``cells/<id>.png`` (originals above
    their matched reconstructions) and ``cells/<id>.npy``. A picture is a nicety: a failure
    to draw it is noted in the record, never lost over."""
    png, npy = own_artifact(cell_id, "picture"), own_artifact(cell_id, "arrays")
    try:
        files = {png: png_bytes(grid_image(originals01, recon01, order)),
                 npy: arrays_bytes(originals01, recon01, order)}
    except Exception as e:
        return {"picture": None, "picture_error": f"{type(e).__name__}: {e}"}, {}
    return {"picture": png, "arrays": npy}, files


def own_artifact(cell_id: str, field: str) -> str:
    """The path a cell's ``picture`` or ``arrays`` has under its results folder."""
    return f"{PICTURES}/{cell_id}.{'png' if field == 'picture' else 'npy'}"


MISSING = "is missing or not a file"  # a record's artifact that is simply not there


def locate_artifact(results: Path, rel: Any) -> tuple[Path | None, str]:
    """``(path, "")`` for the record's artifact ``rel`` when it is a file inside ``results``;
    else ``(None, why)``: an absolute path, ``../..`` or a link out of the folder, a loop of
    links, a name no file has, or no file there."""
    if not rel or not isinstance(rel, str):
        return None, "is no file name"
    if "\0" in rel:  # no file has such a name (resolve() raised ValueError)
        return None, "holds a NUL character"
    try:
        root, path = results.resolve(), (results / rel).resolve()
    except (OSError, RuntimeError) as e:  # a loop of links: RuntimeError on Python 3.11
        return None, f"cannot be followed ({e})"
    if root not in path.parents:
        return None, f"is outside {results}"
    return (path, "") if path.is_file() else (None, MISSING)


def artifact_path(results: Path, rel: Any, cell: str) -> Path | None:
    """The record's artifact ``rel`` when it is a file inside ``results``; anything else is
    not shown, with a warning where the record points somewhere it should not (a missing
    file is the caller's to name)."""
    path, why = locate_artifact(results, rel)
    if path is None and rel and isinstance(rel, str) and why != MISSING:
        warn(f"cell {cell}: {rel!r} {why}; not shown")
    return path


def read_arrays(path: Path, mapped: bool = False) -> Any:
    """The numpy array of a cell's arrays file, never unpickling (``mapped``: read-only, from
    disk as it is indexed); ValueError (or OSError) when the file holds no single array (a
    .npz archive, a Git LFS pointer)."""
    import numpy as np

    data = np.load(path, allow_pickle=False, mmap_mode="r" if mapped else None)
    if not isinstance(data, np.ndarray):  # a .npz archive
        data.close()
        raise ValueError("not a .npy array (a .npz archive?)")
    return data


MAX_ARRAY_VALUES = 1 << 29
"""Originals and reconstructions of one cell, at most (2 GB once in float): a batch of 256
RGB images of 512 px is 2^28.6 values in all, a hand-made header claiming gigabytes more."""


def load_cell_arrays(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, reconstructions) in [0,1] from a file written from :func:`arrays_bytes`;
    ValueError (or OSError) when the file is not one."""
    import numpy as np

    data = read_arrays(path, mapped=True)  # the header's shape first: a hand-made header
    if not (data.ndim >= 3 and data.shape[0] == 2 and data.dtype == np.uint8):  # of a
        raise ValueError(f"not originals above reconstructions in uint8 (shape "  # sparse
                         f"{tuple(data.shape)}, {data.dtype})")  # 6 GB file was read whole
    if data.size > MAX_ARRAY_VALUES:
        raise ValueError(f"{data.size} values, above the {MAX_ARRAY_VALUES} a cell writes")
    array = torch.from_numpy(np.array(data)).float() / 255.0
    return array[0], array[1]
