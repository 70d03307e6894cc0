"""InstaHide (Huang, Song, Li, Arora, ICML 2020): MixUp, then a random sign on every pixel.

The mixture is built exactly as by ``mixup`` (k images, Dirichlet(3,1,…) coefficients
bounded in [c1, c2], soft labels mixed with the same coefficients); then every entry of
the mixed image (each channel of each pixel) is multiplied by an independent random ±1,
as in the GradAttack evaluation. The sign mask acts in model-input space and is fresh
for every image; the labels are not flipped.

Both the authors' code and GradAttack's flip *normalised* pixels (the channel mean
subtracted: values of either sign), so a flip hides the sign of each centred value. On a
dataset with ``normalize: false`` (the default of the bundled image datasets) model-input
pixels lie in [0,1], the mixture is non-negative, and its absolute value undoes every flip:
such cells measure MixUp plus a sign mask anyone can remove, not the paper's encoding. Use
``normalize: true`` for the latter.
"""

from __future__ import annotations

import torch

from bench.contracts import DefenseContext
from bench.registry import register_defense
from defenses.mixup import MixUp


@register_defense("instahide")
class InstaHide(MixUp):
    """MixUp of k images (bounded Dirichlet coefficients), then a random ±1 mask per pixel."""

    paper = ("Huang, Song, Li, Arora. InstaHide: Instance-hiding Schemes for Private Distributed "
             "Learning. ICML 2020; settings of Huang et al. NeurIPS 2021 (GradAttack)")

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, ctx: DefenseContext
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        mixed_x, mixed_y = self.mix(x, y, ctx)
        sign = torch.randint(0, 2, mixed_x.shape, generator=ctx.generator) * 2 - 1
        return mixed_x * sign.to(mixed_x.device, mixed_x.dtype), mixed_y
