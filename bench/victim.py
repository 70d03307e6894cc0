"""The victim model of a cell: its architecture at random init, or after N training steps."""

from __future__ import annotations

import torch
from torch import nn

from bench.contracts import Arch, Dataset, DatasetMeta


def victim_model(arch: Arch, dataset: Dataset, meta: DatasetMeta, state: str, seed: int
                 ) -> nn.Module:
    """Build the model deterministically from ``seed``; ``state`` is "init" or "trained:N"."""
    torch.manual_seed(seed)  # torch's own initialisers draw from the global generator
    model = arch.build(meta.shape, meta.num_classes)
    arch.init_weights(model, torch.Generator().manual_seed(seed))
    if state == "init":
        return model
    raise ValueError(f"victim state {state!r} is not supported yet")
