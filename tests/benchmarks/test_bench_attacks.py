"""Benchmark: time per iteration of dlg, idlg, ig and gradinversion on one fixed cell.

The cell: a 32×32 bundled photo (batch 1, seed 0), ConvNet of width 4 at init, FedSGD with
BatchNorm in train mode, BN statistics granted. Only ``reconstruct`` is timed (the
observation is built once, outside the timer). ``extra_info`` reports seconds per
iteration (an L-BFGS step for dlg/idlg, an Adam step for ig/gradinversion) and per
gradient evaluation, which is the comparable unit across attacks.

Run with ``pytest tests/benchmarks --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import copy

import pytest
import torch

from bench.client import compute_update
from bench.contracts import ClientSpec, Observation, Update
from bench.data import sample_batch
from bench.domains import PixelBox
from bench.grants import BN_STATS
from bench.registry import ARCHS, ATTACKS, DATASETS
from bench.victim import victim_model

ATTACK_PARAMS = {
    "dlg": {"steps": 5},  # up to 20 gradient evaluations per step
    "idlg": {"steps": 5},
    "ig": {"iterations": 50},
    "gradinversion": {"iterations": 50},
}


def observation() -> Observation:
    ds = DATASETS.get("photos").cls(size=32)
    meta = ds.meta()
    x, y = sample_batch(ds, 1, torch.Generator().manual_seed(0))
    model = victim_model(ARCHS.get("convnet").cls(width=4), ds, meta, "init", 0)
    client = ClientSpec()
    update = compute_update(model, x, y, client)
    return Observation(model=copy.deepcopy(model), update=Update(update.tensors, update.kind),
                       batch_size=1, domain=PixelBox(meta.shape, meta.mean, meta.std),
                       num_classes=meta.num_classes, client=client,
                       grants={BN_STATS: update.bn_stats})


@pytest.mark.parametrize("name", sorted(ATTACK_PARAMS))
def test_bench_attack_time_per_iteration(benchmark, name):
    attack = ATTACKS.get(name).cls(**ATTACK_PARAMS[name])
    obs = observation()
    recons = []

    def once():
        obs.generator = torch.Generator().manual_seed(1)
        recons.append(attack.reconstruct(obs))

    benchmark.pedantic(once, rounds=3, iterations=1, warmup_rounds=1)
    rec = recons[-1]
    assert rec.iterations > 0 and rec.grad_evals > 0
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update({
        "cell": "convnet(width=4) photos(size=32) batch 1 fedsgd bn train, init",
        "iterations": rec.iterations, "grad_evals": rec.grad_evals,
        "seconds_per_iteration": seconds / rec.iterations,
        "seconds_per_grad_eval": seconds / rec.grad_evals,
    })
