"""Scoring: de-normalise, match one-to-one, then per-image MSE/PSNR/SSIM and label accuracy.

- Both batches are de-normalised to [0,1] and clamped before any metric.
- Reconstructions are matched to originals one-to-one (Hungarian matching on MSE),
  never with replacement.
- SSIM is torchmetrics' standard Gaussian-window SSIM (σ = 1.5, 11×11 window, or the
  largest odd window that fits a smaller image).
- PSNR uses data range 1; an exact reconstruction (MSE < 1e-10) is capped at 100 dB.
- Label accuracy is the multiset overlap of true and inferred labels: order-independent.
- A cell succeeds when its mean PSNR reaches the suite's ``success_psnr``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torchmetrics.functional.image import structural_similarity_index_measure

from bench.data import denormalize  # noqa: F401  (re-exported for callers of scoring)

PSNR_CAP_DB = 100.0


def pairwise_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """MSE between every image of ``a`` (rows) and of ``b`` (columns)."""
    return ((a.flatten(1)[:, None, :] - b.flatten(1)[None, :, :]) ** 2).mean(-1)


def match(originals: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Indices into ``recon`` matched one-to-one to each original, by least total MSE."""
    cost = pairwise_mse(originals, recon).double().cpu().numpy()
    rows, cols = linear_sum_assignment(cost)
    order = torch.empty(len(originals), dtype=torch.long)
    order[torch.as_tensor(rows)] = torch.as_tensor(cols)
    return order


def psnr(mse: torch.Tensor) -> torch.Tensor:
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(PSNR_CAP_DB)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    side = min(a.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    return structural_similarity_index_measure(
        b.double(), a.double(), gaussian_kernel=True, sigma=1.5 * kernel / 11,
        kernel_size=kernel, data_range=1.0, reduction="none")


def label_accuracy(true: torch.Tensor, inferred: torch.Tensor | None) -> float | None:
    if inferred is None:
        return None
    overlap = Counter(true.tolist()) & Counter(inferred.flatten().tolist())
    return sum(overlap.values()) / len(true)


def score(originals01: torch.Tensor, labels: torch.Tensor, recon01: torch.Tensor,
          inferred_labels: torch.Tensor | None, success_psnr: float) -> dict[str, Any]:
    """Metrics of one cell from images already in [0,1] (N×C×H×W) on the CPU."""
    originals01 = originals01.detach().cpu().double()
    recon01 = recon01.detach().cpu().double()
    if recon01.shape[1:] != originals01.shape[1:]:
        raise ValueError(f"reconstruction shape {tuple(recon01.shape)} does not match "
                         f"the batch {tuple(originals01.shape)}")
    order = match(originals01, recon01)
    matched = recon01[order]
    mse = ((matched - originals01) ** 2).flatten(1).mean(-1)
    p = psnr(mse)
    s = ssim_per_image(originals01, matched)
    return {
        "psnr": float(p.mean()),
        "psnr_worst": float(p.min()),
        "ssim": float(s.mean()),
        "ssim_worst": float(s.min()),
        "mse": float(mse.mean()),
        "mse_worst": float(mse.max()),
        "label_acc": label_accuracy(labels.cpu(), inferred_labels),
        "success": bool(float(p.mean()) >= success_psnr),
        "per_image": {"psnr": [float(v) for v in p], "ssim": [float(v) for v in s],
                      "mse": [float(v) for v in mse]},
        "matching": [int(i) for i in order],
    }
