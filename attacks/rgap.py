"""R-GAP: the recursive closed-form gradient attack (Zhu & Blaschko, ICLR 2021).

The attack walks the network from the top layer down. At every layer it knows the loss
gradient ``k`` with respect to the layer's output and, from the layer above, the output
itself; it then solves one linear least-squares system for the layer's input (see
:mod:`attacks.rgap_solver`). The recovered input, passed through the inverse activation,
is the next layer's output, and ``k`` is carried down through the transposed weights and
the activation's derivative.

Scope: an ``nn.Sequential`` chain of bias-free ``Conv2d``/``Linear`` layers with invertible
activations (LeakyReLU with a positive slope, identity, sigmoid, tanh), ending in

- a single bias-free logit trained with the logistic loss (the paper's setting): the
  scalar ``w·∇w = μ·ℓ'(μ)`` is inverted for the logit, or
- a biased linear layer (any number of outputs): its bias gradient is ``k`` itself, so the
  layer's input is ``∇Wᵀk/‖k‖²`` (= ``∇W[j]/∇b[j]`` for every row ``j``).

Anything else (ReLU, BatchNorm, pooling, residual connections, biases below the top) is
declared incompatible with the reason (the parsing lives in :mod:`attacks.rgap_chain`).

Ambiguities the gradient leaves, and how they are settled without the ground truth:

- the label sign ``y`` of the single logit is unknown: both signs are tried, and the one
  whose next layer down is consistent (smaller least-squares residual) wins;
- for a negative ``w·∇w`` the scalar equation has two roots. LeakyReLU chains without bias
  are positively homogeneous, so both roots explain the gradient exactly, with images that
  differ by a scale factor. The attack picks the largest-scale candidate that lies in the
  known pixel box (a darker copy of the image always fits the box too).

Batch > 1: the shared gradient is the batch mean, so the top layer yields one
k-weighted combination of the batch's features and the recursion recovers a single
combined image, not the individual ones. The attack returns that image once per batch
slot (the scoring's one-to-one matching then compares it with every original).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from attacks import rgap_activations as ra
from attacks import rgap_solver as rs
from attacks.closed_form import ClosedFormAttack
from attacks.labels import count_labels
from attacks.rgap_chain import Chain, Stage, parse_chain
from bench.contracts import Observation, Reconstruction
from bench.registry import Param, register_attack

MAX_UNKNOWNS = 16_384
"""The most unknowns a layer's input may have: each layer solves dense n×n normal equations
(a float64 Gram matrix, its float32 copy and factor: 16·n² bytes, 4 GiB at this bound; the
papers' 32×32×3 input has 3 072)."""

FIT_RESIDUAL = 1e-6
"""A candidate's next-layer residual at or below this fits the layer (the true root's sits at
the ridge's and rounding's level: about 1e-8 in float64, 3e-7 in float32; a wrong label sign
leaves one of order 1), so the pixel box, not ``sign_margin``, decides among such fits."""

# ---------------------------------------------------------------------------------------------
# the recursion


@dataclass
class Descent:
    """The result of one pass down the chain from a top-layer candidate."""

    x: torch.Tensor  # the recovered input of the bottom layer (its in_shape)
    layers: list[dict[str, float]]  # per layer, top first: the solver's diagnostics


def _weights(stage: Stage, grads: list[torch.Tensor], dev: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor]:
    w = stage.module.weight.detach().to(dev, torch.float64)
    g = grads[stage.weight_index]
    return w, g


def _solve(st: Stage, w: torch.Tensor, g: torch.Tensor, k: torch.Tensor, z: torch.Tensor,
           ridge: float) -> rs.LayerSolve:
    if st.kind == "conv":
        return rs.solve_conv(w, g, k, z, st.in_shape, st.stride, st.padding, ridge=ridge)
    return rs.solve_linear(w, g, k.reshape(-1), z.reshape(-1), ridge=ridge)


def _forward(st: Stage, w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if st.kind == "conv":
        return torch.nn.functional.conv2d(x[None], w, stride=st.stride, padding=st.padding)[0]
    return (w @ x.reshape(-1)).reshape(st.out_shape)


def descend(chain: Chain, grads: list[torch.Tensor], x_top: torch.Tensor, k_top: torch.Tensor,
            dev: torch.device, ridge: float, stop_after: int | None = None,
            refine_signs: int = 0) -> Descent:
    """Run R-GAP from the top layer's recovered input ``x_top`` and logit gradient ``k_top``."""
    stages = chain.stages
    x, k = x_top, k_top
    layers: list[dict[str, float]] = []
    for i in range(len(stages) - 2, -1, -1):
        if stop_after is not None and len(layers) >= stop_after:
            break
        st, above = stages[i], stages[i + 1]
        w_above = above.module.weight.detach().to(dev, torch.float64)
        y = x.reshape(st.out_shape)  # the activation's output = the input of the layer above
        z = ra.inverse_activation(st.act, y, st.slope)
        if above.kind == "linear":
            back = (k @ w_above).reshape(st.out_shape)
        else:
            back = rs.conv_input_gradient(w_above, k, above.in_shape, above.stride,
                                          above.padding).reshape(st.out_shape)
        k = back * ra.activation_derivative(st.act, z, y, st.slope)
        w, g = _weights(st, grads, dev)
        res = _solve(st, w, g, k, z, ridge)
        signs, flipped, passes, last = z, 0, 0, z.numel()
        for _ in range(refine_signs if st.act == "leaky_relu" else 0):
            # a near-zero pre-activation may carry the wrong sign (noise), which changes
            # σ' and so k by the factor 1/slope. The layer's own forward prediction W·x
            # is a second opinion on the sign: re-solve with it until the signs agree.
            # Many disagreements mean the layer above is already wrong: then stop.
            zhat = (res.z_pred if res.z_pred is not None else _forward(st, w, res.x)
                    ).reshape(z.shape)
            flips = (zhat > 0) != (signs > 0)
            count = int(flips.sum())
            if count == 0 or count >= last or count > max(10, 0.01 * z.numel()):
                break
            signs = torch.where(flips, zhat, signs)
            flipped += count
            last = count
            passes += 1
            k = back * ra.activation_derivative(st.act, signs, y, st.slope)
            res = _solve(st, w, g, k, z, ridge)
        res.info.update(sign_flips=float(flipped), sign_passes=float(passes))
        x = res.x
        layers.append(res.info)
    return Descent(x, layers)


def _box_violation(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> float:
    """Mean distance of the pixels to the valid box, relative to the box's width."""
    width = float((hi - lo).mean())
    out = (torch.relu(lo - x) + torch.relu(x - hi)).mean()
    return float(out) / width


def _outside_fraction(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                      margin: float = 0.05) -> float:
    """Fraction of the pixels more than ``margin`` box widths outside the valid box."""
    m = margin * (hi - lo)
    return float(((x < lo - m) | (x > hi + m)).to(torch.float64).mean())


def _layer_lists(layers: list[dict[str, float]], depth: int, top_unknowns: int
                 ) -> dict[str, list[Any]]:
    """Per-layer diagnostics as JSON-friendly lists, top layer first (non-finite → None)."""
    keys = {"unknowns": "layer_unknowns", "residual_gradient": "layer_residual_gradient",
            "residual_forward": "layer_residual_forward", "cond_estimate": "layer_cond_estimate",
            "solver": "layer_solver", "sign_flips": "layer_sign_flips",
            "rank_deficit": "layer_rank_deficit"}
    out: dict[str, list[Any]] = {"layer_index": list(range(depth - 1, -1, -1))}
    for key, name in keys.items():
        vals: list[Any] = [float(top_unknowns) if key == "unknowns" else None]
        for d in layers:
            v = d.get(key)
            vals.append(float(v) if v is not None and math.isfinite(v) else None)
        out[name] = vals
    return out


@register_attack("rgap")
class RGAP(ClosedFormAttack):
    """Closed-form recursive attack: per layer, least squares on gradient + forward constraints."""

    paper = "Zhu & Blaschko. R-GAP: Recursive Gradient Attack on Privacy. ICLR 2021"
    params = (
        Param("ridge", float, 1e-9, low=0.0, high=1.0,
              help="Tikhonov term of each layer's normal equations, relative to the mean "
                   "diagonal; raise it (e.g. 1e-3) against noisy gradients"),
        Param("refine_signs", int, 3, low=0, high=100,
              help="per layer, passes that re-solve with the signs of the layer's own forward "
                   "prediction where they contradict the layer above (noise robustness)"),
        Param("box_tolerance", float, 0.1, low=0.0, high=1.0,
              help="a candidate image fits the pixel box when at most this fraction of its "
                   "pixels lies clearly outside; of those the largest-scale one is returned"),
        Param("sign_margin", float, 5.0, low=1.0, high=1e6,
              help="a label-sign/root candidate is dropped when its next-layer residual is "
                   "this many times the best one"),
    )

    def parse_model(self, model: nn.Module, input_shape: tuple[int, ...]
                    ) -> tuple[Chain | None, str | None]:
        chain, reason = parse_chain(model, input_shape)
        if chain is None:
            return chain, reason
        widest = max(chain.stages, key=lambda st: math.prod(st.in_shape))
        n = math.prod(widest.in_shape)
        if n > MAX_UNKNOWNS:  # the same reason on every machine, whatever its memory
            return None, (f"a layer's input has {n} unknowns (shape {widest.in_shape}), above "
                          f"{MAX_UNKNOWNS}: its dense {n}×{n} Gram matrix and factor would take "
                          f"{16 * n * n / 2 ** 30:.0f} GiB")
        return chain, None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        chain = self.parsed(obs)
        dev = obs.device
        grads = [t.detach().to(dev, torch.float64) for t in obs.update.tensors]
        if not all(bool(torch.isfinite(g).all()) for g in grads):
            images = torch.full((obs.batch_size, *obs.input_shape), float("nan"), device=dev)
            return Reconstruction(images, None, 0, 0, [], {"diverged": True,
                                                           "reason": "non-finite gradient"})
        if not any(bool(g.any()) for g in grads):  # no information: every root is 0
            images = torch.zeros((obs.batch_size, *obs.input_shape), device=dev)
            return Reconstruction(images, None, 0, 0, [], {
                "diverged": True, "diverged_reason": "the shared update is all zero: R-GAP "
                "has nothing to invert"})
        top = chain.stages[-1]
        w_top, g_top = _weights(top, grads, dev)
        info: dict[str, Any] = {"top": chain.top}
        labels = None
        if chain.top == "bias":
            k = grads[top.bias_index].reshape(-1)
            kk = float(k @ k)
            x_top = (g_top.T @ k) / kk if kk > 0 else torch.zeros(w_top.shape[1], device=dev,
                                                                   dtype=torch.float64)
            cands = [(k, x_top, 1.0)]
            if top.module.out_features > 1:  # batch 1: the most negative entry (exact); a
                # larger batch: Geng et al.'s counts, which can repeat a class, where the B
                # most negative entries are B distinct classes
                labels = (torch.argsort(k)[:1] if obs.batch_size == 1
                          else count_labels(obs)).cpu()
        else:
            c = float((w_top * g_top).sum())
            roots = ra.invert_udldu(c)
            info.update(udldu=c, roots=roots)
            cands = []
            for y in (1.0, -1.0):
                for u in roots:
                    kval = -y / (1.0 + math.exp(min(u, 700.0)))
                    k = torch.tensor([kval], dtype=torch.float64, device=dev)
                    cands.append((k, g_top.reshape(-1) / kval, kval))
        x, layers, chosen = self._select(chain, grads, cands, obs, info)
        info.update(chosen_candidate=chosen, candidates=len(cands))
        info.update(_layer_lists(layers, len(chain.stages), int(w_top.shape[1])))
        image = x.reshape(1, *obs.input_shape).to(torch.float32)
        images = image.expand(obs.batch_size, *obs.input_shape).clone()
        return Reconstruction(images, labels, iterations=len(chain.stages), grad_evals=0,
                              loss_trace=[], info=info)

    def _select(self, chain: Chain, grads: list[torch.Tensor],
                cands: list[tuple[torch.Tensor, torch.Tensor, float]], obs: Observation,
                info: dict[str, Any]) -> tuple[torch.Tensor, list[dict[str, float]], int]:
        """Settle the label sign and the root: next-layer residual first, then the pixel box."""
        dev = obs.device
        if len(cands) == 1:
            d = descend(chain, grads, cands[0][1], cands[0][0], dev, self.ridge,
                        refine_signs=self.refine_signs)
            return d.x, d.layers, 0
        alive = list(range(len(cands)))
        if len(chain.stages) > 1:  # the wrong sign makes the layer below inconsistent
            res: dict[int, float] = {}
            tested: dict[float, int] = {}
            for i, (k, x_top, kval) in enumerate(cands):
                sign = math.copysign(1.0, kval)
                if chain.homogeneous and sign in tested:
                    # the roots of one sign differ by a scale, which leaves the relative
                    # residuals unchanged: one test per sign is enough
                    res[i] = res[tested[sign]]
                    continue
                tested[sign] = i
                d = descend(chain, grads, x_top, k, dev, self.ridge, stop_after=1)
                r = d.layers[0]
                res[i] = math.hypot(r.get("residual_gradient", 0.0), r.get("residual_forward", 0.0))
            best = min(res.values())
            info["candidate_residuals"] = [res[i] if math.isfinite(res[i]) else None
                                           for i in range(len(cands))]
            # a residual at the ridge's and rounding's level is a fit, however much smaller
            # another one is: between fits the pixel box decides (a wrong sign leaves O(1))
            alive = [i for i in alive if res[i] <= max(self.sign_margin * best, FIT_RESIDUAL)
                     or not math.isfinite(best)]
        lo, hi = obs.domain.bounds(obs.device)
        lo, hi = lo[0].to(torch.float64), hi[0].to(torch.float64)
        finals: dict[int, Descent] = {}
        for sign in (1.0, -1.0):  # one descent per sign; rescale for the other root if exact
            group = [i for i in alive if math.copysign(1.0, cands[i][2]) == -sign]
            if not group:
                continue
            first = group[0]
            finals[first] = descend(chain, grads, cands[first][1], cands[first][0], dev,
                                    self.ridge, refine_signs=self.refine_signs)
            for i in group[1:]:
                if chain.homogeneous:  # x_top = ∇w/k, and the whole chain scales with it
                    s = cands[first][2] / cands[i][2]
                    finals[i] = Descent(finals[first].x * s, finals[first].layers)
                else:
                    finals[i] = descend(chain, grads, cands[i][1], cands[i][0], dev,
                                        self.ridge, refine_signs=self.refine_signs)
        shape = tuple(obs.input_shape)
        order = sorted(finals)
        viol = [_box_violation(finals[i].x.reshape(shape), lo, hi) for i in order]
        outside = [_outside_fraction(finals[i].x.reshape(shape), lo, hi) for i in order]
        info.update(candidates_descended=order, candidate_box_violation=viol,
                    candidate_outside_fraction=outside)
        fits = [i for i, f in zip(order, outside) if f <= self.box_tolerance]
        if fits:  # a darker copy of the image fits the box too: prefer the largest scale
            chosen = max(fits, key=lambda i: float(finals[i].x.abs().mean()))
        else:
            chosen = order[min(range(len(order)), key=lambda j: viol[j])]
        return finals[chosen].x, finals[chosen].layers, chosen
