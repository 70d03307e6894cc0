"""Peak signal-to-noise ratio per matched pair, on images in [0,1]."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.metrics.mse import mse_per_pair

PSNR_CAP_DB = 100.0


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB from MSE at data range 1; an exact reconstruction (MSE < 1e-10) is 100 dB."""
    return (10 * torch.log10(1.0 / mse.clamp_min(1e-10))).clamp_max(PSNR_CAP_DB)


def psnr_per_pair(originals01: torch.Tensor, recon01: torch.Tensor) -> torch.Tensor:
    return psnr(mse_per_pair(originals01, recon01))


@register_metric
class PSNR(Metric):
    """Peak signal-to-noise ratio, 10·log10(1/MSE) at data range 1, capped at 100 dB: the
    headline metric of gradient inversion since DLG (Zhu et al., NeurIPS 2019) and Inverting
    Gradients (Geiping et al., NeurIPS 2020)."""

    name = "psnr"
    label = "PSNR"
    unit = "dB"
    modality = "image"
    higher_is_better = True
    kind = "per_item"
    digits = 2
    order = 10
    best = PSNR_CAP_DB
    worst = 0.0
    compute = staticmethod(psnr_per_pair)
