"""Label inference from the shared update, for attacks that are not granted the labels.

- :func:`idlg_label`: iDLG's rule (Zhao et al. 2020), exact at batch size 1.
- :func:`count_labels`: the label counts of a batch from the last layer's bias gradient
  (or, without a bias, its weight gradient), after Geng et al. 2021, "Towards General
  Deep Leakage in Federated Learning" (arXiv 2110.09074).
- :func:`infer_labels`: the shared entry point: iDLG's rule at batch 1, counts above.

A FedAvg delta has the opposite sign of a gradient: ``θ_E − θ_0 = −lr Σ_s g_s``. The
rules read ``−delta / (lr · local steps)`` as a gradient-equivalent, which is exact for
the signs at batch 1 and a first-order approximation of the counts.

On a secure aggregate of K clients with B samples each, the observed batch is K·B: the mean
of the K clients' mean gradients is the mean gradient of the K·B samples (equal batches),
so the count rule reads K·B labels; a raw sum (``aggregate_of``) is divided by K first.
iDLG's rule is used only when the observed batch is one sample.
"""

from __future__ import annotations

import torch
from torch import nn

from attacks.gradient_matching import local_steps
from bench.client import set_bn_mode
from bench.contracts import Observation


def last_linear(model: nn.Module) -> tuple[int, nn.Linear]:
    """Index (into ``model.parameters()``) of the weight of the last linear layer, and the layer."""
    index = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError("the model has no linear layer to read labels from")
    layer = linears[-1]
    return index[id(layer.weight)], layer


def _bias_index(model: nn.Module, layer: nn.Linear) -> int | None:
    if layer.bias is None or not layer.bias.requires_grad:
        return None
    params = [p for p in model.parameters() if p.requires_grad]
    return next(i for i, p in enumerate(params) if p is layer.bias)


def idlg_label(obs: Observation) -> torch.Tensor:
    """The class whose row of the last layer's weight gradient has a negative sum.

    With softmax cross-entropy at batch 1 the row for class c is (p_c − y_c)·a; with
    non-negative activations a (ReLU, sigmoid) only the true class gives a negative row.
    Where the features entering the layer can be negative (tanh), that sum's sign says
    nothing, and the bias gradient p − y, negative only at the true class whatever the
    activation, is read instead (when the layer has a bias). A FedAvg delta flips every
    sign, so there the true class has the positive row.
    """
    i, layer = last_linear(obs.model)
    sign = -1.0 if obs.update.kind == "delta" else 1.0
    bias = _bias_index(obs.model, layer)
    if bias is not None and not features_non_negative(obs, layer):
        return (sign * obs.update.tensors[bias]).argmin().view(1)
    return (sign * obs.update.tensors[i]).sum(dim=1).argmin().view(1)


PROBES = 4  # random inputs whose features entering the last layer are checked for sign


def features_non_negative(obs: Observation, layer: nn.Linear) -> bool:
    """Whether the features entering ``layer`` were ≥ 0 on random inputs of the domain box
    (a fixed probe seed: the observation's generator is the attack's, left untouched)."""
    if not hasattr(obs.domain, "bounds"):  # token ids: no box to probe (no iDLG on text)
        return True
    lo, hi = obs.domain.bounds(obs.device)
    g = torch.Generator().manual_seed(0)
    x = lo + (hi - lo) * torch.rand((PROBES, *obs.input_shape), generator=g).to(obs.device)
    feats, _ = _forward_features(obs, layer, [x], bn_mode=None)  # eval: no statistics move
    return bool((feats[0] >= 0).all())


def _forward_features(obs: Observation, layer: nn.Linear, inputs: list[torch.Tensor],
                      bn_mode: str | None) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The features entering ``layer`` and the model's outputs for each input batch, without
    gradient, with BatchNorm in ``bn_mode`` (None: the whole model in eval mode); the model's
    modes and buffers are as before (BatchNorm in train mode moves the running statistics)."""
    feats: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach()))
    modes = {m: m.training for m in obs.model.modules()}
    buffers = {k: v.clone() for k, v in obs.model.named_buffers()}
    try:
        if bn_mode is None:
            obs.model.eval()
        else:
            set_bn_mode(obs.model, bn_mode)
        with torch.no_grad():
            outputs = [obs.model(x) for x in inputs]
    finally:
        handle.remove()
        with torch.no_grad():
            for k, v in obs.model.named_buffers():
                v.copy_(buffers[k])
        for m, training in modes.items():
            m.training = training
    return feats, outputs


def _gradient_equivalent(obs: Observation, t: torch.Tensor) -> torch.Tensor:
    """The shared tensor as a batch-mean gradient over the observed batch: a summed aggregate
    is divided by K, FedAvg deltas become −delta/(lr·steps) (steps of one client's batch)."""

    t = t / (obs.aggregate_scale * obs.clients)  # a mean over clients: ÷ 1; a sum: ÷ K
    if obs.update.kind != "delta":
        return t
    steps = local_steps(obs.client, obs.client_batch_size)
    return -t / (obs.client.lr * steps)


def _dummy_statistics(obs: Observation, draws: int, generator: torch.Generator
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Geng et al.'s estimates from random dummy inputs: mean class probabilities p̄ (K)
    and the mean summed activation Ō entering the last linear layer."""
    _, layer = last_linear(obs.model)
    lo, hi = obs.domain.bounds(obs.device)
    # batches of a client's size: BatchNorm in train mode sees alike
    inputs = [lo + (hi - lo) * torch.rand((obs.client_batch_size, *obs.input_shape),
                                          generator=generator).to(obs.device)
              for _ in range(draws)]
    feats, outputs = _forward_features(obs, layer, inputs, obs.client.bn_mode)
    probs = [torch.sigmoid(logits) if logits.shape[-1] == 1  # logistic loss on the parity
             else logits.softmax(-1) for logits in outputs]
    p_bar = torch.cat(probs).mean(0)
    o_bar = torch.cat(feats).flatten(1).sum(1).mean()
    return p_bar, o_bar


def _round_counts(raw: torch.Tensor, total: int, present: torch.Tensor) -> torch.Tensor:
    """Non-negative integer counts summing to ``total`` closest to ``raw`` (largest remainder);
    classes known to be ``present`` get at least one when the total allows. A raw count is
    read within [0, total] (a non-finite one as 0): no class can hold more than the batch,
    and the loops below move one unit a step (a raw 15 175 928 for a batch of 1, from a
    sign-quantised update, had spun for minutes; an infinite one for ever)."""
    raw = raw.nan_to_num(nan=0.0, posinf=float(total), neginf=0.0).clamp(0.0, float(total))
    counts = raw.floor().long()
    for c in torch.nonzero(present).flatten().tolist():
        if counts[c] == 0 and int(counts.sum()) < total:
            counts[c] = 1
    while int(counts.sum()) < total:
        counts[int((raw - counts).argmax())] += 1
    while int(counts.sum()) > total:
        slack = (raw - counts).masked_fill(counts == 0, float("inf"))
        counts[int(slack.argmin())] -= 1
    return counts


def count_labels(obs: Observation, draws: int = 8) -> torch.Tensor:
    """Labels of the whole observed batch (K·B on an aggregate) from the last layer's
    gradient, as class counts (sorted).

    Geng et al. 2021: with mean cross-entropy over a batch of B, the bias gradient of class
    c is ∇b_c = p̄_c − n_c/B, where p̄_c is the batch-mean predicted probability, so
    n_c = B·(p̄_c − ∇b_c). Without a bias, the summed weight row gives
    Σ_j ∇W_cj ≈ Ō·(p̄_c − n_c/B) with Ō the mean summed activation entering the layer. The
    attacker does not know p̄ and Ō; it estimates them from the model on random inputs in
    the pixel box (``draws`` batches of B), which is accurate for models whose predictions
    vary little between inputs (early training) and degrades on trained models. Counts are
    rounded to integers summing to B; a class with a negative bias gradient is in the
    batch for certain and gets at least one. Single-logit models (logistic loss on the
    label's parity) return 0 for each inferred even label and 1 for each odd one.
    """
    i, layer = last_linear(obs.model)
    bias_i = _bias_index(obs.model, layer)
    gen = torch.Generator().manual_seed(0x1AB)  # fixed, and leaves obs.generator untouched
    p_bar, o_bar = _dummy_statistics(obs, draws, gen)
    b = obs.batch_size
    if bias_i is not None:
        g = _gradient_equivalent(obs, obs.update.tensors[bias_i].to(p_bar))
        raw = b * (p_bar - g)
        present = g < 0
    else:
        row = _gradient_equivalent(obs, obs.update.tensors[i].to(p_bar)).sum(1)
        scale = o_bar if float(o_bar.abs()) > 1e-12 else torch.ones_like(o_bar)
        raw = b * (p_bar - row / scale)
        present = (row < 0) if float(o_bar) > 0 else torch.zeros_like(row, dtype=torch.bool)
    if raw.numel() == 1:  # one logit: the count of positive (even-class) samples
        split = _round_counts(torch.cat([raw, b - raw]).cpu(), b, torch.zeros(2, dtype=torch.bool))
        positives = int(split[0])
        return torch.tensor([0] * positives + [1] * (b - positives), dtype=torch.long)
    counts = _round_counts(raw.cpu(), b, present.cpu())
    return torch.repeat_interleave(torch.arange(len(counts)), counts)


def infer_labels(obs: Observation) -> torch.Tensor:
    """The labels an attacker not granted LABELS works with: iDLG's rule when the observed
    batch is one sample, else counts (on a K-client aggregate: K·B of them).

    Returns class indices on the CPU, one per image of the batch.
    """
    _, layer = last_linear(obs.model)
    if obs.batch_size == 1 and layer.out_features > 1:
        return idlg_label(obs).cpu()
    return count_labels(obs)


def reported_labels(obs: Observation, labels: torch.Tensor | None, inferred: bool = True
                    ) -> torch.Tensor | None:
    """The labels a reconstruction reports for scoring (label accuracy), on the CPU: those the
    attack recovered. None when the suite granted them (nothing was recovered: scoring them
    would credit the grant) or when the model has one logit (what its update gives away is
    each label's parity, not its class, so a class-label accuracy does not apply)."""
    if labels is None or not inferred:
        return None
    linears = [m for m in obs.model.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].out_features < 2:
        return None
    return labels.detach().cpu()


def labels_for(obs: Observation) -> tuple[torch.Tensor, bool]:
    """The granted labels (on the observation's device), or those inferred from the update;
    and whether they were inferred."""
    from bench.grants import LABELS

    granted = obs.grant(LABELS)
    if granted is None:
        return infer_labels(obs).to(obs.device), True
    return granted.to(obs.device), False
