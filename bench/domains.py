"""Input domains: where a reconstruction lives and what the attacker knows about its range.

An attack reconstructs the private batch in model-input space; the domain says the shape of
one sample and which values are valid. Images are a :class:`PixelBox` (pixels in [0,1],
normalised per channel, as the dataset's metadata says); a token domain (a vocabulary) can
join it as another :class:`InputDomain` without touching the image attacks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.data import normalize


class InputDomain:
    """Base: the shape of one sample and the kind of data (``"pixels"``, later ``"tokens"``)."""

    kind: str = ""
    shape: tuple[int, ...]


@dataclass(frozen=True)
class PixelBox(InputDomain):
    """Images of ``shape`` (C, H, W) with pixels in [0,1], normalised by ``mean``/``std``.

    The attacker knows the normalisation, hence the box of valid images in model-input
    space (Inverting Gradients projects onto it after every step, Geiping et al. 2020).
    """

    shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    kind: str = "pixels"

    def bounds(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Lower and upper bounds of a valid image in model-input space, shaped (1, C, 1, 1)."""
        c = len(self.mean)
        lo = normalize(torch.zeros(1, c, 1, 1), self.mean, self.std)
        hi = normalize(torch.ones(1, c, 1, 1), self.mean, self.std)
        return lo.to(device), hi.to(device)
