"""MixUp as a defense, with the coefficients of the GradAttack evaluation (Huang et al. 2021).

Each private image is mixed with k−1 other images of the private dataset
(``ctx.sample_batch``): x̃ = λ₀·x + Σⱼ λⱼ·xⱼ, and its label with the same coefficients
into a soft row ỹ = λ₀·onehot(y) + Σⱼ λⱼ·onehot(yⱼ). The coefficients are drawn from a
Dirichlet with concentration (3, 1, …, 1), the 3 going to the private image, and redrawn
until every one lies in [c1, c2] (rejection sampling), as GradAttack's MixUp does
(k = 4, c1 = 0, c2 = 0.65 in its evaluation). A box the draws can never or almost never meet
is refused when the suite loads: k·c1 < 1 < k·c2 (strictly: at equality only one point
of the simplex is in the box), and an acceptance rate, estimated from
:data:`ACCEPTANCE_DRAWS` fixed-seed draws, of at least :data:`MIN_ACCEPTANCE` (below it
every image would take thousands of redraws, and some none within :data:`MAX_DRAWS`).
The mixing happens in model-input space.
The harness scores reconstructions against the private images, not the mixtures.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from bench.contracts import Defense, DefenseContext, Update
from bench.registry import Param, register_defense

MAX_DRAWS = 100_000  # rejection-sampling attempts per row before giving up
MIN_ACCEPTANCE = 1e-3  # the least share of draws in [c1, c2] a suite may ask for
ACCEPTANCE_DRAWS = 100_000  # fixed-seed draws that estimate it when a suite loads


def numpy_rng(generator: torch.Generator) -> np.random.Generator:
    """A numpy generator seeded from the defense's torch generator: reproducible per cell."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


def bounded_dirichlet(rows: int, alpha: list[float], low: float, high: float,
                      rng: np.random.Generator) -> np.ndarray:
    """``rows`` Dirichlet(alpha) draws, each redrawn until all its entries lie in [low, high]."""
    out = np.empty((rows, len(alpha)))
    for i in range(rows):
        for _ in range(MAX_DRAWS):
            lam = rng.dirichlet(alpha)
            if len(alpha) == 1 or (lam.min() >= low and lam.max() <= high):
                out[i] = lam
                break
        else:
            raise RuntimeError(f"no Dirichlet{tuple(alpha)} draw within [{low}, {high}] "
                               f"in {MAX_DRAWS} attempts")
    return out


@functools.lru_cache(maxsize=64)
def acceptance_rate(alpha: tuple[float, ...], low: float, high: float,
                    draws: int = ACCEPTANCE_DRAWS) -> float:
    """The share of ``draws`` Dirichlet(alpha) draws (numpy, seed 0) whose entries all lie in
    [low, high]: an estimate of how often :func:`bounded_dirichlet` accepts a draw."""
    rng = np.random.default_rng(0)
    accepted = 0
    for start in range(0, draws, 10_000):
        lam = rng.dirichlet(alpha, size=min(10_000, draws - start))
        accepted += int(((lam.min(axis=1) >= low) & (lam.max(axis=1) <= high)).sum())
    return accepted / draws


def soft_rows(y: torch.Tensor, num_classes: int, dtype: torch.dtype) -> torch.Tensor:
    """Class indices (B) → one-hot rows (B×K); soft rows pass through."""
    if y.dim() == 2:
        return y.to(dtype)
    return torch.nn.functional.one_hot(y.long(), num_classes).to(dtype)


@register_defense("mixup")
class MixUp(Defense):
    """Mix each image with k−1 others of the dataset, λ ~ Dirichlet(3,1,…) bounded in [c1, c2]."""

    level = "data"
    modalities = frozenset({"image"})  # mixes pixels; a convex mix of token ids is no text
    paper = ("Zhang et al. mixup. ICLR 2018; coefficients as in Huang, Gupta, Song, Li, Arora. "
             "Evaluating Gradient Inversion Attacks and Defenses in Federated Learning. "
             "NeurIPS 2021 (GradAttack)")
    params = (
        Param("k", int, 4, low=1, high=64, help="images per mixture, the private one included"),
        Param("c1", float, 0.0, low=0.0, high=1.0, help="lower bound of every coefficient"),
        Param("c2", float, 0.65, low=0.0, high=1.0, help="upper bound of every coefficient"),
        Param("alpha_private", float, 3.0, low=1e-3, high=1000.0,
              help="Dirichlet concentration of the private image's coefficient"),
        Param("alpha_others", float, 1.0, low=1e-3, high=1000.0,
              help="Dirichlet concentration of each other image's coefficient"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        """A box [c1, c2] the coefficients can (almost) never be drawn in is refused."""
        k, c1, c2 = config["k"], config["c1"], config["c2"]
        if k == 1:  # the private image alone, coefficient 1: no draw to bound
            return None
        if not k * c1 < 1.0 < k * c2:
            return (f"coefficients in [c1={c1:g}, c2={c2:g}] cannot sum to 1 over k={k} "
                    f"images with positive probability (needs k·c1 < 1 < k·c2)")
        alpha = (config["alpha_private"],) + (config["alpha_others"],) * (k - 1)
        rate = acceptance_rate(alpha, c1, c2)
        if rate < MIN_ACCEPTANCE:
            return (f"a Dirichlet({alpha[0]:g}, {alpha[1]:g}, …) draw of k={k} coefficients "
                    f"lies in [c1={c1:g}, c2={c2:g}] with probability about {rate:.2g} (of "
                    f"{ACCEPTANCE_DRAWS} fixed-seed draws; at least {MIN_ACCEPTANCE:g} needed): "
                    "widen [c1, c2] or change alpha_private/alpha_others")
        return None

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coefficients: torch.Tensor | None = None  # B×k, of the last batch

    def extra_items(self, batch_size: int) -> int:
        """The k − 1 images mixed into each private one, distinct over the batch."""
        return batch_size * (self.k - 1)

    def draw_coefficients(self, rows: int, generator: torch.Generator) -> torch.Tensor:
        alpha = [self.alpha_private] + [self.alpha_others] * (self.k - 1)
        lam = bounded_dirichlet(rows, alpha, self.c1, self.c2, numpy_rng(generator))
        return torch.from_numpy(lam)

    def mix(self, x: torch.Tensor, y: torch.Tensor, ctx: DefenseContext
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mixed batch and its soft labels; records the coefficients (B×k)."""
        b = len(x)
        lam = self.draw_coefficients(b, ctx.generator).to(x.device, x.dtype)
        self.coefficients = lam.detach().cpu()
        mixed_x = lam[:, 0].view(-1, 1, 1, 1) * x
        mixed_y = lam[:, :1] * soft_rows(y, ctx.num_classes, x.dtype).to(x.device)
        if self.k > 1:
            if ctx.sample_batch is None:
                raise ValueError(f"{self.registry_name} needs the defense context's "
                                 "sample_batch to draw the other images")
            others_x, others_y = ctx.sample_batch(b * (self.k - 1))  # distinct images
            others_x = others_x.to(x.device, x.dtype).view(self.k - 1, b, *x.shape[1:])
            others_y = soft_rows(others_y, ctx.num_classes, x.dtype).to(x.device)
            others_y = others_y.view(self.k - 1, b, -1)
            for j in range(1, self.k):
                mixed_x = mixed_x + lam[:, j].view(-1, 1, 1, 1) * others_x[j - 1]
                mixed_y = mixed_y + lam[:, j:j + 1] * others_y[j - 1]
        return mixed_x, mixed_y

    def transform_batch(self, x: torch.Tensor, y: torch.Tensor, ctx: DefenseContext
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mix(x, y, ctx)

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        if self.coefficients is None:
            return update
        out = update.clone()
        out.info[f"{self.registry_name}_coefficients"] = self.coefficients.tolist()
        return out
