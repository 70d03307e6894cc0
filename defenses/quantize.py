"""Quantisation of the shared update: fp16, int8 and sign (DLG Sec. 5; signSGD).

DLG (Zhu et al. 2019, Sec. 5) evaluates half precision and int8 as defenses. Here they are
measured, not assumed: in the committed ``defenses`` suite (results/defenses, digits 16×16,
batch 1) iDLG still reaches 45 dB through per-tensor int8 and 73 dB through fp16 on LeNet,
so neither stops the attack there. signSGD (Bernstein et al. 2018) shares one bit per entry
and drops the magnitudes.
"""

from __future__ import annotations

import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense

INT8_LEVELS = 127  # symmetric: integers in [-127, 127], zero exactly representable


def int8_roundtrip(t: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Symmetric per-tensor int8: scale = max|t| / 127, round to nearest, then dequantise.

    Returns the dequantised tensor and the scale; every entry's error is at most scale / 2.
    """
    peak = float(t.abs().max()) if t.numel() else 0.0
    if peak == 0.0:
        return t.clone(), 0.0
    scale = peak / INT8_LEVELS
    q = torch.round(t / scale).clamp(-INT8_LEVELS, INT8_LEVELS).to(torch.int8)
    return q.to(t.dtype) * scale, scale


@register_defense("quantize")
class Quantize(Defense):
    """Quantise every entry of the update: fp16 round trip, per-tensor int8, or its sign."""

    paper = ("Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019 (Sec. 5, fp16/int8); "
             "Bernstein et al. signSGD. ICML 2018 (sign)")
    params = (
        Param("mode", str, "int8", choices=("fp16", "int8", "sign"),
              help="fp16: IEEE half round trip (entries beyond ±65504 become ±inf, as "
                   "in half precision); int8: symmetric, one scale per tensor (max|t|/127); "
                   "sign: −1, 0 or +1 per entry (magnitudes dropped)"),
    )

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        out = update.clone()
        if self.mode == "fp16":
            out.tensors = [t.half().to(t.dtype) for t in update.tensors]
        elif self.mode == "int8":
            pairs = [int8_roundtrip(t) for t in update.tensors]
            out.tensors = [q for q, _ in pairs]
            out.info["int8_scales"] = [s for _, s in pairs]
        else:
            out.tensors = [torch.sign(t) for t in update.tensors]
        return out
