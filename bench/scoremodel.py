"""A score model of the public split: denoising score matching over a range of noise levels.

The network (bench.scorenet: a tiny U-Net with EDM's preconditioning) is trained on the
public split (bench.public), scaled to [−1, 1], with the loss of Karras et al. 2022
("Elucidating the Design Space of Diffusion-Based Generative Models", EDM):
E‖D(x + σn, σ) − x‖² weighted by λ(σ), with ln σ ~ N(p_mean, p_std²). Adam, and an
exponential moving average of the weights, which is what is kept. The score is
s(x, σ) = (D(x, σ) − x)/σ² (Tweedie).

Trained models are cached like trained victims (bench.victim): one file per key, a hash
of the public split's key, every training setting and the seed, under
``$LEAKBENCH_CACHE/scores/``, written atomically while a lock file beside it is held, so
parallel workers train each model once. Training shows its progress and loss (tqdm).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bench.cache import cache_root, cached, load_weights, settings_key, state_bytes
from bench.public import PublicData
from bench.scorenet import Preconditioned, TinyUNet


@dataclass(frozen=True)
class ScoreSettings:
    """Every setting that determines the trained weights (all part of the cache key)."""

    width: int = 16
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    ema: float = 0.995
    p_mean: float = -1.2
    p_std: float = 1.2
    sigma_data: float = 0.5
    version: int = 1


def to_unit(x01: torch.Tensor) -> torch.Tensor:
    """Pixels in [0,1] → the score model's space [−1, 1]."""
    return x01 * 2 - 1


def from_unit(u: torch.Tensor) -> torch.Tensor:
    """The score model's space → pixels in [0,1], clamped."""
    return ((u + 1) / 2).clamp(0, 1)


def score_key(public: PublicData, settings: ScoreSettings, seed: int) -> str:
    ident = {"data": public.key, "shape": list(public.images.shape[1:]),
             "settings": asdict(settings), "seed": seed}
    return settings_key(ident)


def build(channels: int, settings: ScoreSettings, seed: int) -> Preconditioned:
    torch.manual_seed(seed)  # the network's initialisers draw from the global generator
    return Preconditioned(TinyUNet(channels, settings.width), settings.sigma_data)


def train_score(public: PublicData, settings: ScoreSettings, seed: int, progress: bool = True
                ) -> Preconditioned:
    """``settings.steps`` Adam steps of EDM's denoising score matching on the public split."""
    data = to_unit(public.images.float())
    if len(data) == 0:
        raise ValueError("the public split is empty: nothing to train a score model on")
    model = build(data.shape[1], settings, seed)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(seed ^ 0x5C0)
    bar = tqdm(range(settings.steps), desc="score model", unit="step", disable=not progress,
               dynamic_ncols=True)
    running = None
    for step in bar:
        x = data[torch.randint(len(data), (settings.batch_size,), generator=gen)]
        sigma = (torch.randn(len(x), generator=gen) * settings.p_std + settings.p_mean).exp()
        noisy = x + sigma.view(-1, 1, 1, 1) * torch.randn(x.shape, generator=gen)
        per = ((model(noisy, sigma) - x) ** 2).flatten(1).mean(1)
        loss = (model.loss_weight(sigma) * per).mean()
        if not torch.isfinite(loss):
            raise ValueError(f"score-model training diverged at step {step + 1}")
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), model.parameters()):
                e.lerp_(p, 1 - settings.ema)
        value = loss.item()
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % 50 == 0 or step == settings.steps - 1:
            bar.set_postfix(loss=f"{running:.4f}")
    return ema.eval()


def load_or_train(public: PublicData, settings: ScoreSettings, seed: int,
                  cache: Path | None = None, progress: bool = True
                  ) -> tuple[Preconditioned, bool]:
    """The score model of ``public`` (from the cache when there) and whether it was a hit."""
    path = (cache or cache_root() / "scores") / f"{score_key(public, settings, seed)}.pt"
    model = build(public.images.shape[1], settings, seed)
    trained_now = False

    def train() -> bytes:
        nonlocal trained_now
        trained_now = True
        return state_bytes(train_score(public, settings, seed, progress))

    cached(path, train, lambda p: model if load_weights(model, p) else None)
    return model.requires_grad_(False).eval(), not trained_now


class CountedDenoiser:
    """D(x, σ) of a score model, counting score evaluations exactly.

    ``nfe`` is the number of per-image evaluations (a call on a batch of B images adds B),
    ``calls`` the number of network calls; the score is (D − x)/σ² (Tweedie). No gradient
    flows through the network: samplers and attacks treat the score as a given vector field.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.nfe = 0
        self.calls = 0

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).expand(len(x))
        self.nfe += len(x)
        self.calls += 1
        with torch.no_grad():
            return self.model(x.detach(), sigma)


def describe(settings: ScoreSettings) -> dict[str, Any]:
    """The settings as the records and tables show them."""
    return asdict(settings)
