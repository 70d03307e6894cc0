"""Structural similarity per matched pair, on images in [0,1]."""

from __future__ import annotations

import torch

from bench.metrics.base import Metric, register_metric


def ssim_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """torchmetrics' Gaussian-window SSIM of ``b`` against ``a``: σ = 1.5 on an 11×11 window,
    or the largest odd window that fits a smaller image (σ scaled with it)."""
    # imported here: torchmetrics (and torchvision under it) take about a second to import,
    # which a suite's validation must not pay (leakbench run's 5-s load bound)
    from torchmetrics.functional.image import structural_similarity_index_measure

    side = min(a.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    return structural_similarity_index_measure(
        b.double(), a.double(), gaussian_kernel=True, sigma=1.5 * kernel / 11,
        kernel_size=kernel, data_range=1.0, reduction="none")


@register_metric
class SSIM(Metric):
    """Structural similarity (Wang et al., IEEE TIP 2004): local luminance, contrast and
    structure agreement, closer to perceived fidelity than PSNR; 1 for identical images."""

    name = "ssim"
    label = "SSIM"
    modality = "image"
    higher_is_better = True
    kind = "per_item"
    digits = 3
    order = 20
    best = 1.0
    worst = -1.0
    compute = staticmethod(ssim_per_image)
