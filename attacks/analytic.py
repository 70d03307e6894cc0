"""Analytic inversion of a biased first linear layer (Phong et al. 2018; Geiping et al. 2020).

For a first layer ``h = W x + b`` the shared gradients are ``∇W = Σ_b δ_b x_bᵀ`` and
``∇b = Σ_b δ_b`` (δ_b: the loss gradient at the layer's output for sample b, the same
batch-mean factor on both). Every row j with ``∇b[j] ≠ 0`` therefore gives

    ∇W[j, :] / ∇b[j] = Σ_b α_bj x_b,   with   α_bj = δ_bj / Σ_b' δ_b'j,   Σ_b α_bj = 1,

an affine combination of the batch's images: at batch 1 it is the image itself, exactly,
whatever the rest of the network. At batch B > 1 a row is "pure" (one image) when only one
sample excites the unit (ReLU units often do, sigmoid units never), and a mixture otherwise.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attacks.closed_form import ClosedFormAttack, sequential_leaves
from attacks.labels import count_labels
from bench.contracts import Observation, Reconstruction
from bench.registry import Param, register_attack


def first_linear(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[nn.Linear | None,
                                                                           str | None]:
    """The model's first layer if it is a biased Linear on the whole flattened input."""
    if not isinstance(model, nn.Sequential):
        return None, (f"the analytic attack needs an nn.Sequential whose first layer is a "
                      f"biased Linear; {type(model).__name__} does not say which layer comes first")
    for m in sequential_leaves(model):
        if isinstance(m, (nn.Flatten, nn.Identity)):
            continue
        if not isinstance(m, nn.Linear):
            return None, (f"the first layer is {type(m).__name__}, not a Linear layer: the "
                          "analytic inversion needs the input to enter a biased linear layer")
        if m.bias is None:
            return None, "the first Linear layer has no bias: its gradient cannot be divided out"
        if not (m.weight.requires_grad and m.bias.requires_grad):
            return None, "the first Linear layer is frozen: its gradient is not shared"
        if m.in_features != math.prod(input_shape):
            return None, (f"the first Linear layer takes {m.in_features} features, not the "
                          f"{math.prod(input_shape)} of the flattened input")
        return m, None
    return None, "the model has no layer"


@register_attack("analytic")
class Analytic(ClosedFormAttack):
    """Closed form from a biased first linear layer: x = ∇W[j,:] / ∇b[j] (exact at batch 1)."""

    paper = ("Phong, Aono, Hayashi, Wang, Moriai. Privacy-Preserving Deep Learning via "
             "Additively Homomorphic Encryption. IEEE TIFS 2018 (Sec. 3)")
    params = (
        Param("min_bias_ratio", float, 1e-3, low=0.0, high=1.0,
              help="rows whose |∇b[j]| is below this fraction of the largest are ignored "
                   "(their ratio is dominated by noise or rounding)"),
        Param("dup_tol", float, 1e-3, low=0.0, high=1.0,
              help="batch > 1: two rows give the same image when their ratios differ by "
                   "less than this fraction of the typical norm"),
    )

    def parse_model(self, model: nn.Module, input_shape: tuple[int, ...]
                    ) -> tuple[nn.Linear | None, str | None]:
        return first_linear(model, input_shape)

    def reconstruct(self, obs: Observation) -> Reconstruction:
        layer = self.parsed(obs)
        index = {id(p): i for i, p in enumerate(p for p in obs.model.parameters()
                                                  if p.requires_grad)}
        dev = obs.device
        gw = obs.update.tensors[index[id(layer.weight)]].to(dev, torch.float64)
        gb = obs.update.tensors[index[id(layer.bias)]].to(dev, torch.float64)
        scale = float(gb.abs().max())
        # rows below the fraction are ignored: the largest always stays (min_bias_ratio 1);
        # a zero row never (0/0)
        rows = torch.nonzero((gb.abs() >= self.min_bias_ratio * scale) & (gb != 0)).flatten()
        info: dict[str, object] = {"rows_used": int(rows.numel()), "rows": int(gb.numel())}
        if not 0.0 < scale < math.inf:  # zero (top-k keeping nothing, pruning all), inf, NaN
            images = torch.zeros(obs.batch_size, *obs.input_shape, device=dev)
            info.update(diverged=True, diverged_reason=(
                "the bias gradient of the first linear layer is zero: no row to divide by"
                if scale == 0.0 else "the bias gradient of the first linear layer is not "
                "finite"))
            return Reconstruction(images, None, 1, 0, [], info)
        if obs.batch_size == 1:
            # every row gives the image; least squares over all of them: Σ ∇b ∇W / Σ ∇b²
            g = gb[rows]
            x = (g @ gw[rows]) / (g @ g)
            images = x.reshape(1, *obs.input_shape)
            info["chosen_rows"] = [int(rows[g.abs().argmax()])]
        else:
            cand = gw[rows] / gb[rows, None]
            chosen = self._distinct(cand, obs)
            images = cand[chosen].reshape(len(chosen), *obs.input_shape)
            info["chosen_rows"] = [int(rows[i]) for i in chosen]
        return Reconstruction(images.to(torch.float32), self._labels(obs), iterations=1,
                              grad_evals=0, loss_trace=[], info=info)

    def _distinct(self, cand: torch.Tensor, obs: Observation) -> list[int]:
        """``batch_size`` candidate rows, one per image as far as the gradient allows.

        1. Pure rows (a unit excited by one sample only) of the same image coincide, while
           mixtures have continuous weights and almost never do: rows whose ratio image is
           repeated by other rows (within ``dup_tol`` of the typical norm) are taken first,
           largest group first, one representative per group.
        2. The remaining slots go to greedy farthest-point selection among the candidates
           that lie in the pixel box (every ratio is an affine combination of the images,
           so the most spread-out ones are the nearest to the images).
        """
        b = obs.batch_size
        norm = float(cand.norm(dim=1).median()) or 1.0
        dist = torch.cdist(cand, cand)
        close = dist <= self.dup_tol * norm
        chosen: list[int] = []
        free = torch.ones(len(cand), dtype=torch.bool, device=cand.device)
        while len(chosen) < b:
            counts = (close & free[None, :]).sum(1) * free
            best = int(counts.argmax())
            if int(counts[best]) < 2:
                break
            chosen.append(best)
            free &= ~close[best]
            free &= dist[best] > 0.05 * norm  # and near-copies of the same image
        if len(chosen) < b:
            lo, hi = obs.domain.bounds(obs.device)
            c = obs.input_shape[0]
            lo = lo[0].to(cand.device, cand.dtype).reshape(c, 1, 1).expand(obs.input_shape)
            hi = hi[0].to(cand.device, cand.dtype).reshape(c, 1, 1).expand(obs.input_shape)
            lo, hi = lo.reshape(1, -1), hi.reshape(1, -1)
            viol = (torch.relu(lo - cand) + torch.relu(cand - hi)).mean(dim=1)
            viol = viol / float((hi - lo).mean())
            pool = torch.nonzero(free & (viol <= 0.05)).flatten()
            if pool.numel() == 0:
                pool = torch.nonzero(free).flatten()
            if pool.numel() == 0:
                pool = torch.arange(len(cand), device=cand.device)
            if chosen:
                near = dist[pool][:, chosen].min(1).values
            else:
                centre = cand[pool].mean(0, keepdim=True)
                near = ((cand[pool] - centre) ** 2).sum(1)
            while len(chosen) < b:
                i = int(near.argmax())
                chosen.append(int(pool[i]))
                near = torch.minimum(near, dist[pool, int(pool[i])])
        return chosen[:b]

    def _labels(self, obs: Observation) -> torch.Tensor | None:
        """Batch 1: the class with the most negative last-layer bias gradient (exact). A
        larger batch: Geng et al.'s counts (:func:`attacks.labels.count_labels`), which can
        repeat a class, where the B most negative entries are B distinct classes."""
        linears = [m for m in obs.model.modules() if isinstance(m, nn.Linear)]
        last = linears[-1] if linears else None
        if last is None or last.bias is None or last.out_features < 2 \
                or not last.bias.requires_grad:
            return None
        if obs.batch_size > 1:
            return count_labels(obs).cpu()
        index = {id(p): i for i, p in enumerate(p for p in obs.model.parameters()
                                                  if p.requires_grad)}
        gb = obs.update.tensors[index[id(last.bias)]].flatten()
        return torch.argsort(gb)[:min(obs.batch_size, gb.numel())].cpu()
