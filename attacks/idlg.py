"""iDLG: improved Deep Leakage from Gradients (Zhao, Mopuri, Bilen 2020)."""

from __future__ import annotations

import torch

from attacks.gradient_matching import LBFGS_PARAMS, dummy_update, l2_distance, run_lbfgs
from attacks.labels import idlg_label
from bench.contracts import Attack, CellContext, Observation, Reconstruction
from bench.registry import register_attack


@register_attack("idlg")
class IDLG(Attack):
    """The label from the sign of the last layer's gradient (batch 1), then L-BFGS on the image."""

    paper = "Zhao, Mopuri, Bilen. iDLG: Improved Deep Leakage from Gradients. arXiv 2001.02610"
    params = LBFGS_PARAMS
    update_kinds = frozenset({"gradient"})  # matches one gradient; FedAvg is not unrolled

    def incompatibility(self, ctx: CellContext) -> str | None:
        """The sign rule reads one sample's label: the observed batch must be 1 (on a
        secure aggregate of K clients the server observes K·B samples)."""
        if ctx.clients > 1 and ctx.batch_size != 1:
            return (f"iDLG's label rule holds only for one sample; the server observes an "
                    f"aggregate of {ctx.clients} clients, {ctx.batch_size} samples")
        if ctx.batch_size != 1:
            return "iDLG's label rule holds only at batch size 1"
        return None

    def reconstruct(self, obs: Observation) -> Reconstruction:
        g, dev = obs.generator, obs.device
        label = idlg_label(obs).to(dev)
        x = torch.randn((1, *obs.input_shape), generator=g).to(dev).requires_grad_(True)
        observed = [t.to(dev) for t in obs.update.tensors]

        def objective() -> torch.Tensor:
            return l2_distance(dummy_update(obs.model, x, label, obs), observed)

        res = run_lbfgs([x], objective, self.steps, self.lr, self.max_eval_per_step,
                        self.history_size, max_grad_evals=obs.max_grad_evals,
                        max_iterations=obs.max_iterations)
        return Reconstruction(x.detach(), label.cpu(), res.iterations, res.grad_evals,
                              res.loss_trace, {"final_loss": res.final_loss,
                                               "diverged": res.diverged})
