"""DP-SGD (Abadi et al., CCS 2016): per-sample clipping to C, then Gaussian noise of std σC.

The client recomputes its update from per-sample gradients (``torch.func``: functional_call,
vmap, grad), clips each sample's gradient to L2 norm C over all parameters together, sums,
adds N(0, σ²C²) to every coordinate of the sum and divides by the batch size, as Opacus does.
In FedAvg mode every local step of the client's loop (``bench.client.local_sgd``) is such a
noisy step. The (ε, δ) it reports come from
Opacus's accountant for the configured sampling rate and number of steps: they describe a
whole training run of that length, not this one update.

In a chain, ``dpsgd`` recomputes the update from the batch the client trains on, so
data-level links before it (MixUp, InstaHide) are honoured while update-level links before
it are discarded: put it first among the update-level links.

BatchNorm: in train mode a sample's output depends on the whole batch, so there is no
per-sample gradient to clip; in eval mode the gradient is per sample, but the client would
still share its batch's BatchNorm statistics, which are not clipped or noised. Opacus refuses
BatchNorm for both reasons, and so do we: cells whose model has BatchNorm are skipped
(GroupNorm, LayerNorm and InstanceNorm are per sample and fine).
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from bench.client import has_batchnorm, local_sgd, training_loss
from bench.contracts import CellContext, ClientSpec, Defense, DefenseContext, Update
from bench.registry import Param, register_defense

CLIP_EPS = 1e-6  # Opacus's guard: factor = C / (norm + 1e-6), so a clipped norm is below C
BATCHNORM_REASON = ("DP-SGD needs per-sample gradients; BatchNorm mixes the samples of a batch "
                    "(train mode) and its shared batch statistics are not privatised; "
                    "use a model with GroupNorm/LayerNorm")


PRV_MAX_POINTS = 2 ** 24  # above it the PRV accountant is not run (time and memory grow with it)
NOTE_MAX_CHARS = 300  # an ε note is one short line, however many warnings the accountant gave


def one_line(text: str, limit: int = NOTE_MAX_CHARS) -> str:
    """``text`` on one line (whitespace collapsed), cut to ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def warnings_note(messages: list[str]) -> str | None:
    """The distinct warnings in order of first appearance, each with its count if repeated, on
    one bounded line (Opacus's PRV accountant can repeat one numpy warning thousands of times)."""
    counts: dict[str, int] = {}
    for m in messages:
        m = " ".join(m.split())
        counts[m] = counts.get(m, 0) + 1
    if not counts:
        return None
    return one_line("; ".join(m if n == 1 else f"{m} (×{n})" for m, n in counts.items()))


@functools.lru_cache(maxsize=128)
def prv_grid_points(noise_multiplier: float, sample_rate: float, steps: int, delta: float
                    ) -> float | None:
    """How many points the grid of Opacus's PRVAccountant would hold for these settings.

    The PRV accountant (Gopi et al. 2021) discretises the privacy loss on [−L, L] with a mesh
    that narrows as √T grows; its time and memory are proportional to the points (on a CPU
    about 1 s and 130 MB per million). This mirrors its own domain rule
    (``PRVAccountant._get_domain``: ``compute_safe_domain_size`` for L, mesh
    ε_err / √(T·log(12/δ_err)/2), at its defaults ε_err = 0.01, δ_err = δ/1000) and costs a
    fraction of a second. None where Opacus does not offer the rule or it fails.
    """
    try:
        from opacus.accountants.analysis.prv import (
            PoissonSubsampledGaussianPRV,
            compute_safe_domain_size,
        )
        eps_error, delta_error = 0.01, delta / 1000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = compute_safe_domain_size(
                prvs=[PoissonSubsampledGaussianPRV(sample_rate, noise_multiplier)],
                max_self_compositions=[steps], eps_error=eps_error, delta_error=delta_error)
        mesh = eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
        points = 2 * float(half) / mesh
    except Exception:  # the accountant itself will say what is wrong
        return None
    return points if math.isfinite(points) else float("inf")


def prv_refusal(noise_multiplier: float, sample_rate: float, steps: int, delta: float
                ) -> str | None:
    """Why the PRV accountant is not run for these settings (its grid is too large), or None."""
    if noise_multiplier == 0:
        return None
    points = prv_grid_points(noise_multiplier, sample_rate, steps, delta)
    if points is None or points <= PRV_MAX_POINTS:
        return None
    return (f"the PRV accountant would need a grid of {points:.2g} points for σ="
            f"{noise_multiplier:g}, q={sample_rate:g}, T={steps}, δ={delta:g} (limit "
            f"{PRV_MAX_POINTS:.2g}; its time and memory grow with it): use accountant: rdp")


@functools.lru_cache(maxsize=128)
def dp_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float,
               accountant: str = "rdp") -> tuple[float | None, str | None]:
    """(ε, note) of ``steps`` Poisson-subsampled Gaussian steps, from Opacus's accountant.

    ε is None when σ = 0 (no guarantee), when the accountant fails (it raises on settings the
    parameters' ranges allow, e.g. a PRV grid too large to allocate) or when the PRV grid is
    over :data:`PRV_MAX_POINTS`; the note then says why. Otherwise the note carries the
    accountant's distinct warnings, if any. Never raises: an ε that cannot be computed must
    not cost a cell its reconstruction or its accuracy.
    """
    if noise_multiplier == 0:
        return None, "noise multiplier 0: no differential privacy guarantee"
    if accountant == "prv":
        refusal = prv_refusal(noise_multiplier, sample_rate, steps, delta)
        if refusal:
            return None, one_line(f"accountant not run: {refusal}")
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant

        acc = RDPAccountant() if accountant == "rdp" else PRVAccountant()
        acc.history.append((noise_multiplier, sample_rate, steps))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            eps = float(acc.get_epsilon(delta=delta))
    except Exception as e:  # MemoryError, ValueError, OverflowError… from the accountant
        return None, one_line(f"accountant failed: {type(e).__name__}: {e}")
    note = warnings_note([str(w.message) for w in caught])
    if eps < 0:  # RDP's conversion at a large δ (0.5: −0.53); ε = 0 holds whenever it does
        eps = 0.0
        note = "; ".join(n for n in (note, "the accountant's ε was below 0 at this δ: shown 0")
                         if n)
    return (eps if math.isfinite(eps) else None), note


def per_sample_gradients(model: nn.Module, x: torch.Tensor, target: torch.Tensor
                         ) -> list[torch.Tensor]:
    """One gradient per sample of the client's loss, stacked: a (B, *shape) tensor per parameter.

    ``target`` holds class indices (B) or soft-label rows (B×K). The parameters are those of
    ``model.parameters()`` that require gradients, in that order (the order of an Update).
    """
    named = [(n, p) for n, p in model.named_parameters()]
    trainable = {n: p.detach() for n, p in named if p.requires_grad}
    if len(x) == 0:  # an empty Poisson draw: vmap over no sample fails in many layers
        return [p.new_zeros((0, *p.shape)) for p in trainable.values()]
    frozen = {n: p.detach() for n, p in named if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def loss_of_one(params: dict[str, torch.Tensor], xi: torch.Tensor, ti: torch.Tensor
                    ) -> torch.Tensor:
        out = functional_call(model, ({**params, **frozen}, buffers), (xi.unsqueeze(0),))
        return training_loss(out, ti.unsqueeze(0))

    grads = vmap(grad(loss_of_one), in_dims=(None, 0, 0), randomness="different")(
        trainable, x, target)
    return [grads[n] for n in trainable]


def clip_per_sample(per_sample: list[torch.Tensor], max_norm: float
                    ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Scale each sample's gradient (all parameters together) to L2 norm ≤ ``max_norm``.

    Returns the clipped per-sample gradients and the norms before clipping (B).
    """
    norms = torch.sqrt(sum((g.flatten(1) ** 2).sum(1) for g in per_sample))
    factor = clip_factors(norms, max_norm)
    clipped = [g * factor.view(-1, *([1] * (g.dim() - 1))) for g in per_sample]
    return clipped, norms


def clip_factors(norms: torch.Tensor, max_norm: float) -> torch.Tensor:
    """Each sample's scale, min(1, C / (norm + 1e-6)) in the norms' dtype (Opacus's guard);
    below 1 exactly where a sample was clipped (in float32 the guard vanishes above norm 32:
    a norm of C there is not scaled)."""
    return (max_norm / (norms + CLIP_EPS)).clamp(max=1.0)


def noisy_mean(clipped: list[torch.Tensor], max_norm: float, noise_multiplier: float,
               generator: torch.Generator, divisor: int | None = None) -> list[torch.Tensor]:
    """(Σ clipped + N(0, σ²C²)) / B per coordinate; the noise is drawn on the CPU generator.

    B is the batch's size, or ``divisor`` where given: the expected size of a Poisson-sampled
    batch (Opacus), whose drawn size must not set the scale of a private update."""
    batch = divisor if divisor is not None else clipped[0].shape[0]
    if batch <= 0:
        raise ValueError("an empty batch has no mean: give the sampler's expected batch size")
    out = []
    for g in clipped:
        total = g.sum(0)
        if noise_multiplier > 0:
            noise = torch.randn(total.shape, generator=generator, dtype=total.dtype)
            total = total + noise_multiplier * max_norm * noise.to(total.device)
        out.append(total / batch)
    return out


def dp_update(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spec: ClientSpec,
              max_norm: float, noise_multiplier: float, generator: torch.Generator,
              expected_batch: int | None = None) -> tuple[list[torch.Tensor], str, list[float]]:
    """The DP-SGD update: one noisy gradient (FedSGD) or the delta of noisy local steps (FedAvg).

    ``expected_batch``: a Poisson sampler's expected batch size, the FedSGD mean's divisor.
    Returns the tensors, the update kind and the pre-clipping per-sample norms of every step.
    """
    if spec.mode == "fedsgd":
        model.train()
        per_sample = per_sample_gradients(model, x, target)
        clipped, norms = clip_per_sample(per_sample, max_norm)
        return noisy_mean(clipped, max_norm, noise_multiplier, generator, expected_batch), \
            "gradient", norms.tolist()
    if spec.mode == "fedavg":
        all_norms: list[float] = []

        def noisy_step(local: nn.Module, xb: torch.Tensor, tb: torch.Tensor
                       ) -> list[torch.Tensor]:
            clipped, norms = clip_per_sample(per_sample_gradients(local, xb, tb), max_norm)
            all_norms.extend(norms.tolist())
            return noisy_mean(clipped, max_norm, noise_multiplier, generator)

        delta = local_sgd(model, x, target, spec, step_gradient=noisy_step).delta
        return delta, "delta", all_norms
    raise ValueError(f"unknown client mode {spec.mode!r}")


@register_defense("dpsgd")
class DPSGD(Defense):
    """DP-SGD: clip every per-sample gradient to `max_grad_norm`, add N(0, (σ·C)²), report ε."""

    recomputes_update = True
    paper = ("Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang. Deep Learning with "
             "Differential Privacy. CCS 2016")
    strength = "noise_multiplier"  # the parameter the privacy–utility plots sweep
    params = (
        Param("max_grad_norm", float, 1.0, low=1e-12,
              help="C: per-sample L2 bound over all parameters together (not per tensor)"),
        Param("noise_multiplier", float, 1.0, low=0.0,
              help="σ: the noise on the clipped sum has standard deviation σ·C per coordinate "
                   "(variance σ²C²); 0 turns the noise off (no guarantee)"),
        Param("sample_rate", float, 0.01, low=1e-9, high=1.0,
              help="q: Poisson sampling rate (batch size / dataset size) for the accountant"),
        Param("steps", int, 1000, low=1, high=10**9,
              help="T: number of noisy steps of the whole training, for the accountant"),
        Param("delta", float, 1e-5, low=1e-300, high=0.999, help="δ at which ε is reported"),
        Param("accountant", str, "rdp", choices=("rdp", "prv"),
              help="Opacus's RDPAccountant (Mironov 2017) or PRVAccountant (Gopi et al. 2021)"),
    )

    @classmethod
    def check_params(cls, config: Mapping[str, Any]) -> str | None:
        """A PRV accounting of the configured σ, q, T whose grid is obviously too large is
        refused when the suite loads, not found out in every cell (see :func:`prv_refusal`)."""
        if config.get("accountant") != "prv":
            return None
        return prv_refusal(config["noise_multiplier"], config["sample_rate"], config["steps"],
                           config["delta"])

    def incompatibility(self, ctx: CellContext) -> str | None:
        if has_batchnorm(ctx.build_model()):
            return BATCHNORM_REASON
        return None

    def privacy(self) -> dict[str, Any]:
        """ε at δ for the configured σ, q and T (Opacus's accountant), with the inputs: the
        budget an attack record reports (labelled as the configured one in the tables)."""
        return self.privacy_of_training(self.sample_rate, self.steps)

    def privacy_of_training(self, sample_rate: float, steps: int) -> dict[str, Any]:
        """ε at δ of ``steps`` noisy steps at Poisson rate ``sample_rate`` (Opacus's
        accountant): the utility track asks it for its own run's q and T."""
        eps, note = dp_epsilon(self.noise_multiplier, sample_rate, steps, self.delta,
                               self.accountant)
        info: dict[str, Any] = {"epsilon": eps, "delta": self.delta,
                                "dp_noise_multiplier": self.noise_multiplier,
                                "dp_max_grad_norm": self.max_grad_norm,
                                "dp_sample_rate": sample_rate, "dp_steps": steps,
                                "dp_accountant": self.accountant}
        if note:
            info["epsilon_note"] = note
        return info

    def transform_update(self, update: Update, ctx: DefenseContext) -> Update:
        if has_batchnorm(ctx.model):
            raise ValueError(f"dpsgd: {BATCHNORM_REASON}")
        tensors, kind, norms = dp_update(ctx.model, ctx.x, ctx.y, ctx.client,
                                         self.max_grad_norm, self.noise_multiplier,
                                         ctx.generator, ctx.expected_batch)
        out = Update(tensors, kind, update.bn_stats, dict(update.info))
        out.info.update(self.privacy())
        out.info["dp_per_sample_norms"] = norms
        # clipped: scaled down, by the factor clip_per_sample applied (the norms' dtype)
        dtype = next(ctx.model.parameters()).dtype
        factors = clip_factors(torch.tensor(norms, dtype=dtype), self.max_grad_norm)
        out.info["dp_clipped_fraction"] = float((factors < 1).sum()) / max(1, len(norms))
        return out
