"""LPIPS per matched pair, with local backbone weights (bench.perceptual finds and loads them)."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric
from bench.perceptual import lpips_per_image


def lpips_per_pair(originals01: torch.Tensor, recon01: torch.Tensor, net: str = "alex",
                   weights: str | None = None) -> torch.Tensor | None:
    """LPIPS of each reconstruction to its original; None when the weights are not found."""
    values = lpips_per_image(originals01, recon01, net, weights)
    return None if values is None else torch.tensor(values, dtype=torch.float64)


@register_metric
class LPIPS(Metric):
    """Learned perceptual image patch similarity (Zhang et al., CVPR 2018): distance between
    calibrated deep features, which tracks human judgements better than PSNR/SSIM; 0 for
    identical images. Needs local backbone weights (see bench.perceptual); n/a without them."""

    name = "lpips"
    label = "LPIPS"
    modality = "image"
    higher_is_better = False
    kind = "per_item"
    digits = 3
    order = 40
    best = 0.0
    needs_weights = True
    compute = staticmethod(lpips_per_pair)
