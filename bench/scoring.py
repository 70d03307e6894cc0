"""Scoring: de-normalise, match one-to-one, then the registered per-item metrics of the cell.

- Both batches are de-normalised to [0,1] and clamped before any metric.
- Reconstructions are matched to originals one-to-one (Hungarian matching on MSE),
  never with replacement.
- Every per-item image metric of :mod:`bench.metrics` that needs no weights file is computed
  on the matched pairs (PSNR, SSIM, MSE) and stored as its mean, its worst pair and the
  per-image list; label metrics (label accuracy) compare the label multisets. LPIPS needs a
  local weights file and is added by the pipeline with the suite's perceptual settings.
- A cell succeeds when its :class:`~bench.metrics.SuccessRule` holds: by default, when its
  mean PSNR reaches the suite's ``success_psnr``.
"""

from __future__ import annotations

from typing import Any

import torch
from scipy.optimize import linear_sum_assignment

from bench.data import denormalize  # noqa: F401  (re-exported for callers of scoring)
from bench.metrics import SuccessRule, list_metrics
from bench.metrics.label_accuracy import label_accuracy  # noqa: F401  (re-exported)
from bench.metrics.psnr import PSNR_CAP_DB, psnr  # noqa: F401  (re-exported)
from bench.metrics.ssim import ssim_per_image  # noqa: F401  (re-exported)

PAIRWISE_BLOCK = 1 << 24
"""The most differences :func:`pairwise_mse` holds at once (64 MB of float32)."""


def pairwise_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE between every image of ``a`` (rows) and of ``b`` (columns), a block of rows at a
    time: all N×N×D differences at once had needed 0.8 GB at batch 256 of 32×32 colour
    images and 13 GB at 1 024 (secure aggregation scores K·B images)."""
    a, b = a.flatten(1), b.flatten(1)
    rows = max(1, PAIRWISE_BLOCK // max(1, b.numel()))
    blocks = [((a[i:i + rows, None, :] - b[None, :, :]) ** 2).mean(-1)
              for i in range(0, len(a), rows)]
    return torch.cat(blocks) if blocks else a.new_zeros(0, len(b))


def match(originals: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Indices into ``recon`` matched one-to-one to each original, by least total MSE (as
    many reconstructions as originals: else some original would be left unmatched)."""
    if len(recon) != len(originals):
        raise ValueError(f"{len(recon)} reconstructions for {len(originals)} originals")
    cost = pairwise_mse(originals, recon).double().cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    order = torch.empty(len(originals), dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return order


def score(originals01: torch.Tensor, labels: torch.Tensor, recon01: torch.Tensor,
          inferred_labels: torch.Tensor | None, success_psnr: float | None = None, *,
          success: SuccessRule | None = None) -> dict[str, Any]:
    """Metrics of one cell from images already in [0,1] (N×C×H×W) on the CPU.

    ``success_psnr`` is the shorthand for ``success=SuccessRule("psnr", success_psnr)``; give
    one or the other (neither: PSNR ≥ 20 dB).
    """
    if success is not None and success_psnr is not None:
        raise ValueError("give success_psnr or success, not both")
    if success is None:
        success = SuccessRule() if success_psnr is None else SuccessRule("psnr", success_psnr)
    originals01 = originals01.detach().cpu().double()
    recon01 = recon01.detach().cpu().double()
    if recon01.shape != originals01.shape:  # one image per original: matched one-to-one
        raise ValueError(f"reconstruction shape {tuple(recon01.shape)} does not match "
                         f"the batch {tuple(originals01.shape)}")
    order = match(originals01, recon01)
    matched = recon01[order]
    out: dict[str, Any] = {}
    per_image: dict[str, list[float]] = {}
    for m in list_metrics("image", "per_item"):
        if m.needs_weights:
            continue
        if m.inputs == "labels":
            out[m.name] = m.compute(labels.cpu(), inferred_labels)
            continue
        values = per_item(m, originals01, matched)
        out[m.name] = float(values.mean())
        out[f"{m.name}_worst"] = float(values.min() if m.higher_is_better else values.max())
        per_image[m.name] = [float(v) for v in values]
    if success.metric not in out:
        raise ValueError(f"success rule over {success.metric!r}, which score() does not compute")
    out["success"] = success.holds(out[success.metric])
    out["per_image"] = per_image
    out["matching"] = [int(i) for i in order]
    return out


def floor_metrics(originals01: torch.Tensor) -> dict[str, float]:
    """The per-item image metrics (means over the batch) of a uniform mid-grey guess (0.5 in
    every pixel and channel, the centre of the pixel box): what an attack that returns
    nothing, knowing nothing of the private data, scores.

    A diverged, failed or timed-out seed enters a leaderboard's means at this floor instead of
    dropping out of them. The guess uses no private statistic (a batch-mean colour would be
    one, and at batch 1 it scores far above many finished attacks).
    """
    originals01 = originals01.detach().cpu().double()
    grey = torch.full_like(originals01, 0.5)
    return {m.name: float(per_item(m, originals01, grey).mean())
            for m in list_metrics("image", "per_item")
            if not m.needs_weights and m.inputs == "images"}


def per_item(metric: Any, originals01: torch.Tensor, recon01: torch.Tensor) -> torch.Tensor:
    """A per-item metric's values, one per image: a plug-in's scalar or 2N values had been
    averaged (or failed) with no word of which metric was wrong."""
    try:
        values = metric.compute(originals01, recon01)
    except Exception as e:  # a plug-in's: the record had said only "setup: KeyError: 3"
        raise ValueError(f"metric {metric.name}: compute raised {type(e).__name__}: {e}") from e
    n = len(originals01)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (n,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise ValueError(f"metric {metric.name}: compute returned {shape}, expected a tensor "
                         f"of {n} values, one per image")
    return values
