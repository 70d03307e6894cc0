"""Metrics as a registry: one module per metric, each registered with its schema.

``list_metrics(modality, kind)`` and ``get_metric(name)`` give the metric classes (see
:mod:`bench.metrics.base` for the schema); :class:`SuccessRule` says when a cell counts as a
successful attack. Built-ins: PSNR, SSIM, MSE, label accuracy, LPIPS (per item), FID and KID
(pooled over a group of cells) for images; token accuracy, exact match and ROUGE-1/2/L for
text.
"""

from bench.metrics.base import (
    INPUTS,
    KINDS,
    METRICS,
    MODALITIES,
    Metric,
    SuccessRule,
    fixed,
    format_value,
    get_metric,
    list_metrics,
    register_metric,
    resolve_per_item,
)

__all__ = [
    "INPUTS", "KINDS", "METRICS", "MODALITIES", "Metric", "SuccessRule", "fixed",
    "format_value",
    "get_metric", "list_metrics", "register_metric", "resolve_per_item",
]
