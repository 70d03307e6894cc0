"""Gradient matching on text: the loop DLG-on-text and TAG share.

Tokens are discrete, so the attack optimises continuous dummy token *embeddings* (B×L×d) and,
as DLG does, dummy label logits (a soft label per position for a language model, per
sequence for classification), to make the gradient they induce match the observed one; at
the end each position is mapped to the nearest token embedding (cosine), the paper's
projection (Zhu et al. 2019, Sec. 4.2). The embedding table's own gradient is left out of
the match: a continuous input never reaches it.

The victim must take embeddings in place of ids (leakbench's transformer does:
``model(embeddings)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch import nn

from attacks.stopping import Plateau
from bench.client import training_loss
from bench.contracts import CellContext, Observation, Reconstruction

Distance = Callable[[Sequence[torch.Tensor], Sequence[torch.Tensor]], torch.Tensor]
EMBEDDING = "tok.weight"


def text_incompatibility(name: str, ctx: CellContext) -> str | None:
    """Why an embedding-optimisation attack cannot run on a text cell, or None."""
    if ctx.arch != "transformer":
        return f"{name} on text optimises the input embeddings of leakbench's transformer"
    if ctx.clients > 1:
        return f"{name} on text inverts one client's update, not a secure aggregate"
    return None


def matched(model: nn.Module, observed: Sequence[torch.Tensor]
            ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(parameters, observed gradients) of every trainable tensor but the embedding table."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    keep = [i for i, (n, _) in enumerate(named) if n != EMBEDDING]
    return [named[i][1] for i in keep], [observed[i].detach() for i in keep]


def nearest_tokens(model: nn.Module, embeddings: torch.Tensor) -> torch.Tensor:
    """Each position's nearest token (cosine similarity to the embedding table), B×L ids."""
    table = nn.functional.normalize(model.tok.weight.detach(), dim=-1)
    return (nn.functional.normalize(embeddings.detach(), dim=-1) @ table.T).argmax(dim=-1)


def optimise_text(obs: Observation, distance: Distance, optimizer: str, steps: int, lr: float,
                  max_eval_per_step: int = 20, history_size: int = 100,
                  line_search_fn: str | None = None, plateau: Plateau | None = None,
                  score_end: bool = False) -> Reconstruction:
    """Match gradients from dummy embeddings and soft labels with L-BFGS (one step = up to
    ``max_eval_per_step`` evaluations) or Adam (one evaluation per step), within the
    suite's caps; the dummies are drawn from the cell's attack generator.

    As on images, at most ``steps`` steps and the suite's ``max_iterations`` (torch's L-BFGS
    step may end early on its tolerances: another is not an extra step), and at most
    ``steps`` × ``max_eval_per_step`` and ``max_grad_evals`` evaluations. ``plateau``
    (L-BFGS): stop once the running best loss, one value per step (the lowest evaluated by
    the step's end), has stalled (:class:`attacks.stopping.Plateau`). ``score_end``: keep
    one evaluation of the budget to score the point returned, as ``final_loss`` (the loss a
    step reports is its start's, before its moves: restarts are ranked on what they
    return)."""
    model = obs.model.to(obs.device)
    model.train()
    params, target = matched(model, obs.update.tensors)
    batch, length = obs.batch_size, obs.input_shape[0]
    width = model.tok.weight.shape[1]
    scale = float(model.tok.weight.detach().std())
    g = obs.generator
    emb = (torch.randn(batch, length, width, generator=g) * scale).to(obs.device)
    lm = getattr(obs.domain, "task", "lm") == "lm"
    shape = (batch, length, obs.num_classes) if lm else (batch, obs.num_classes)
    logits = torch.randn(shape, generator=g).to(obs.device)
    emb.requires_grad_(True)
    logits.requires_grad_(True)
    if obs.max_iterations:
        steps = min(steps, obs.max_iterations)
    budget = steps * (max_eval_per_step if optimizer == "lbfgs" else 1)
    if obs.max_grad_evals:
        budget = min(budget, obs.max_grad_evals)
    if score_end:
        budget = max(1, budget - 1)
    plateau = plateau or Plateau()
    trace: list[float] = []
    bests: list[float] = []  # the running best loss at each L-BFGS step's end
    evals = 0
    best = math.inf

    def loss_now() -> torch.Tensor:
        nonlocal evals, best
        evals += 1
        loss = training_loss(model(emb), logits.softmax(dim=-1))
        grads = torch.autograd.grad(loss, params, create_graph=True)
        value = distance(grads, target)
        best = min(best, float(value.detach()))
        return value

    diverged = stalled = False
    iterations = 0
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([emb, logits], lr=lr, max_iter=max_eval_per_step,
                                history_size=history_size, line_search_fn=line_search_fn)

        def closure() -> torch.Tensor:
            opt.zero_grad()
            value = loss_now()
            value.backward()
            return value

        while iterations < steps and evals < budget and not diverged and not stalled:
            left = budget - evals
            group = opt.param_groups[0]
            group["max_iter"] = min(max_eval_per_step, left)
            group["max_eval"] = group["max_iter"] * 5 // 4
            if line_search_fn is not None:  # a step evaluates its start, then searches: up
                if left < 2:  # to max_eval + 1 evaluations (torch cuts each search to them)
                    break
                group["max_eval"] = min(group["max_eval"], left - 1)
            value = float(opt.step(closure).detach())
            iterations += 1
            trace.append(value)
            diverged = not math.isfinite(value) or not bool(torch.isfinite(emb).all())
            bests.append(best)
            stalled = plateau.stalled(bests)
    else:
        opt = torch.optim.Adam([emb, logits], lr=lr)
        while iterations < steps and evals < budget and not diverged:
            opt.zero_grad()
            value = loss_now()
            value.backward()
            opt.step()
            iterations += 1
            if iterations % 10 == 1:
                trace.append(float(value.detach()))
            diverged = not math.isfinite(float(value.detach()))
        if iterations and iterations % 10 != 1:  # the last loss, where it was not logged:
            trace.append(float(value.detach()))  # final_loss ranks restarts
    # a last step may leave non-finite dummies behind a finite loss: no token is nearest
    diverged = diverged or not bool(torch.isfinite(emb).all() and torch.isfinite(logits).all())
    final = trace[-1] if trace else None
    if score_end and not diverged:
        final = float(loss_now().detach())
        diverged = not math.isfinite(final)
    ids = nearest_tokens(model, emb) if not diverged else torch.zeros(batch, length,
                                                                       dtype=torch.long)
    labels = None if lm else logits.detach().argmax(dim=-1).cpu()
    return Reconstruction(data=ids.cpu(), labels=labels, iterations=iterations,
                          grad_evals=evals, loss_trace=trace,
                          info={"diverged": diverged, "optimizer": optimizer,
                                "final_loss": final,
                                "stop_reason": _stop_reason(diverged, stalled, iterations,
                                                            steps)})


def _stop_reason(diverged: bool, stalled: bool, iterations: int, steps: int) -> str:
    """Why the optimisation stopped, in the image path's words."""
    if diverged:
        return "diverged"
    if stalled:
        return "patience"
    return "steps" if iterations >= steps else "max_grad_evals"


def best_text_restart(obs: Observation, restarts: int,
                      optimise: Callable[[Observation, bool], Reconstruction]) -> Reconstruction:
    """``optimise(obs, score_end)`` run ``restarts`` times on ``obs`` (each with an equal
    share of the suite's caps, drawing its dummies from the cell's generator in turn, so the
    first restart is the lone run's draw), and the restart with the lowest loss at the point
    it returns (one evaluation of its share scores it) among those that did not diverge, with
    the cost of all of them, as on images."""
    if restarts == 1:
        return optimise(obs, False)
    share = replace(obs, max_grad_evals=None if obs.max_grad_evals is None
                    else obs.max_grad_evals // restarts,
                    max_iterations=None if obs.max_iterations is None
                    else obs.max_iterations // restarts)
    runs = [optimise(share, True) for _ in range(restarts)]
    live = [k for k, r in enumerate(runs)
            if not r.info["diverged"] and r.info["final_loss"] is not None]
    best = min(live, key=lambda k: runs[k].info["final_loss"]) if live else 0
    out = runs[best]
    out.grad_evals = sum(r.grad_evals for r in runs)
    out.iterations = sum(r.iterations for r in runs)
    out.info.update(restarts_run=restarts, best_restart=best,
                    restart_losses=[r.info["final_loss"] for r in runs])
    return out
