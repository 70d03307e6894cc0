"""Input domains: where a reconstruction lives and what the attacker knows about its range.

An attack reconstructs the private batch in model-input space; the domain says the shape of
one sample and which values are valid. Images are a :class:`PixelBox` (pixels in [0,1],
normalised per channel, as the dataset's metadata says); text is a :class:`TokenDomain`
(sequences of token ids from a vocabulary). :func:`domain_of` reads a dataset's metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from bench.data import denormalize, normalize


class InputDomain:
    """Base: the shape of one sample and the kind of data (``"pixels"``, later ``"tokens"``)."""

    kind: str = ""
    shape: tuple[int, ...]

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        """Data as the dataset gives it (pixels in [0,1], token ids) → model-input space."""
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-input space → data space (pixels in [0,1] clamped, token ids)."""
        raise NotImplementedError


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

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        return normalize(data, self.mean, self.std)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return denormalize(x, self.mean, self.std)


@dataclass(frozen=True)
class TokenDomain(InputDomain):
    """Sequences of ``shape`` = (length,) token ids in [0, ``vocab_size``), ``pad_id`` padding.

    ``task`` is "lm" (next-token prediction: a label per position) or "classify" (one label
    per sequence). The attacker knows the tokenizer (its vocabulary is public, as a
    pretrained model's is), not the private sentences.
    """

    shape: tuple[int]
    vocab_size: int
    pad_id: int = 0
    task: str = "lm"
    kind: str = "tokens"

    def encode(self, data: torch.Tensor) -> torch.Tensor:
        return data.long()

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x.long().clamp(0, self.vocab_size - 1)


def domain_of(meta: Any) -> InputDomain:
    """The input domain a dataset's metadata (:class:`bench.contracts.DatasetMeta`) describes."""
    if getattr(meta, "modality", "image") == "text":
        return TokenDomain(tuple(meta.shape), len(meta.vocab), 0, meta.task)
    return PixelBox(tuple(meta.shape), tuple(meta.mean), tuple(meta.std))
