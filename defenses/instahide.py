"""InstaHide (Huang, Song, Li, Arora, ICML 2020): MixUp, then a random sign on every pixel.

The mixture is built exactly as by ``mixup`` (k images, Dirichlet(3,1,…) coefficients
bounded in [c1, c2], soft labels mixed with the same coefficients); then every entry of
the mixed image (each channel of each pixel), centred on the dataset's channel mean, is
multiplied by an independent random ±1, as in the GradAttack evaluation. The sign mask is
fresh for every image; the labels are not flipped.

The authors' code and GradAttack flip *normalised* pixels (the channel mean subtracted),
so a flip hides the sign of each centred value. leakbench flips about the dataset's pixel
mean in model-input space, x̃ = μ + s ⊙ (m − μ) (``ctx.centre``): with ``normalize: true``
μ is 0 and this is the paper's encoding; with ``normalize: false`` (the bundled image
datasets' default) it is the same encoding written in [0,1] pixels (an affine change of
the model's input, the same for every image). Flipping uncentred [0,1] pixels instead
would be undone by |x̃|. A dataset that states no pixel mean is flipped about mid-grey.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.contracts import DefenseContext, Update
from bench.registry import register_defense
from defenses.mixup import MixUp


@register_defense("instahide")
class InstaHide(MixUp):
    """MixUp of k images (bounded Dirichlet coefficients), then a random ±1 per centred pixel."""

    paper = ("Huang, Song, Li, Arora. InstaHide: Instance-hiding Schemes for Private Distributed "
             "Learning. ICML 2020; settings of Huang et al. NeurIPS 2021 (GradAttack)")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.centre: torch.Tensor | None = None  # what the last batch's signs flipped about

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, ctx: DefenseContext
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed_x, mixed_y = self.mix(x, y, ctx)
        self.centre = None if ctx.centre is None else ctx.centre.detach().cpu()
        sign = torch.randint(0, 2, mixed_x.shape, generator=ctx.generator) * 2 - 1
        sign = sign.to(mixed_x.device, mixed_x.dtype)
        if ctx.centre is None:
            return mixed_x * sign, mixed_y
        centre = ctx.centre.to(mixed_x.device, mixed_x.dtype)
        return centre + sign * (mixed_x - centre), mixed_y

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        """MixUp's record of the coefficients, plus the centre the signs flipped about (the
        record then says which encoding produced it; None: model-input 0)."""
        out = super().transform_update(update, ctx)
        if self.coefficients is None:
            return out
        out.info["instahide_centre"] = (None if self.centre is None
                                        else self.centre.flatten().tolist())
        return out
