"""DLG: Deep Leakage from Gradients (Zhu, Liu, Han, NeurIPS 2019)."""

from __future__ import annotations

import torch

from attacks.gradient_matching import LBFGS_PARAMS, dummy_update, l2_distance, run_lbfgs
from bench.contracts import Attack, Observation, Reconstruction
from bench.registry import register_attack


@register_attack("dlg")
class DLG(Attack):
    """L-BFGS on a dummy image and dummy soft-label logits, matching gradients in squared L2."""

    paper = "Zhu, Liu, Han. Deep Leakage from Gradients. NeurIPS 2019"
    params = LBFGS_PARAMS
    update_kinds = frozenset({"gradient"})  # matches one gradient; FedAvg is not unrolled

    def reconstruct(self, obs: Observation) -> Reconstruction:
        g, dev = obs.generator, obs.device
        shape = (obs.batch_size, *obs.input_shape)
        x = torch.randn(shape, generator=g).to(dev).requires_grad_(True)
        logits = torch.randn(obs.batch_size, obs.num_classes, generator=g).to(dev)
        logits.requires_grad_(True)
        observed = [t.to(dev) for t in obs.update.tensors]

        def objective() -> torch.Tensor:
            soft_labels = logits.softmax(dim=-1)
            return l2_distance(dummy_update(obs.model, x, soft_labels, obs), observed)

        res = run_lbfgs([x, logits], objective, self.steps, self.lr, self.max_eval_per_step,
                        self.history_size, max_grad_evals=obs.max_grad_evals,
                        max_iterations=obs.max_iterations)
        labels = logits.detach().argmax(dim=-1).cpu()
        return Reconstruction(x.detach(), labels, res.iterations, res.grad_evals,
                              res.loss_trace, {"final_loss": res.final_loss,
                                               "diverged": res.diverged})
