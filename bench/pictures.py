"""Pictures: a PNG grid per cell, originals (top) above their matched reconstructions (bottom)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.utils import make_grid

from bench.store import PICTURES, write_atomic

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
    grid = make_grid(both, nrow=len(originals01), padding=2, pad_value=1.0)
    array = (grid.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(array)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def save_cell_picture(out_dir: Path, cell_id: str, originals01: torch.Tensor,
                      recon01: torch.Tensor, metrics: dict[str, Any]) -> str:
    """Write ``DIR/cells/<cell_id>.png`` and return its path relative to ``DIR``."""
    rel = f"{PICTURES}/{cell_id}.png"
    write_atomic(Path(out_dir) / rel, png_bytes(grid_image(originals01, recon01,
                                                           metrics["matching"])))
    return rel


def save_cell_arrays(out_dir: Path, cell_id: str, originals01: torch.Tensor,
                     recon01: torch.Tensor, metrics: dict[str, Any]) -> str:
    """Write ``DIR/cells/<cell_id>.npy``: uint8 array (2, N, C, H, W) of originals and their
    matched reconstructions, for metrics pooled over cells (FID/KID). Plain .npy: its bytes
    depend on the data only."""
    import numpy as np

    recon = recon01[torch.as_tensor(metrics["matching"])] \
        if len(recon01) == len(originals01) else recon01
    if recon.shape != originals01.shape:
        raise ValueError("reconstruction and batch shapes differ")
    both = torch.stack([originals01.float(), recon.float()]).clamp(0, 1)
    array = (both * 255).round().to(torch.uint8).numpy()
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    rel = f"{PICTURES}/{cell_id}.npy"
    write_atomic(Path(out_dir) / rel, buf.getvalue())
    return rel


def load_cell_arrays(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(originals, reconstructions) in [0,1] from a file written by :func:`save_cell_arrays`."""
    import numpy as np

    array = torch.from_numpy(np.load(path, allow_pickle=False)).float() / 255.0
    return array[0], array[1]
