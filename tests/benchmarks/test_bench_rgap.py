"""Benchmark: R-GAP on CNN6 with one 32×32 RGB photo, the attack alone (no setup, no scoring).

Target: PSNR ≥ 45 dB within 3 s on 2 CPU cores, peak memory below 2 GiB.
Run with ``pytest tests/benchmarks/test_bench_rgap.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import copy

import torch

from attacks.rgap import RGAP
from bench.client import compute_update
from bench.contracts import Observation
from bench.data import sample_batch
from bench.domains import PixelBox
from bench.memory import PeakMemory, _rss_bytes
from bench.registry import ARCHS, DATASETS
from bench.scoring import denormalize, score
from bench.suite import attack_cells
from bench.victim import victim_model
from helpers import make_suite


def _observation():
    (cell,) = attack_cells(make_suite(datasets=[{"photos": {"size": 32}}], archs=["cnn6"],
                         attacks=["rgap"]))
    seeds = cell.derived_seeds()
    dataset = DATASETS.get("photos").cls(size=32)
    meta = dataset.meta()
    x01, y = sample_batch(dataset, 1, torch.Generator().manual_seed(seeds["scenario"]))
    model = victim_model(ARCHS.get("cnn6").cls(), dataset, meta, "init", seeds["scenario"])
    update = compute_update(model, x01, y, cell.client_spec)
    obs = Observation(model=copy.deepcopy(model), update=update, batch_size=1,
                      domain=PixelBox(meta.shape, meta.mean, meta.std),
                      num_classes=meta.num_classes, client=cell.client_spec,
                      generator=torch.Generator().manual_seed(seeds["attack"]))
    return obs, x01, y, meta


def test_bench_rgap_cnn6(benchmark):
    obs, x01, y, meta = _observation()
    attack = RGAP()
    results = []

    def once():
        results.append(attack.reconstruct(obs))

    baseline = _rss_bytes()
    with PeakMemory(torch.device("cpu")) as mem:
        benchmark.pedantic(once, rounds=5, iterations=1, warmup_rounds=1)
    recon = results[-1]
    metrics = score(x01, y, denormalize(recon.data, meta.mean, meta.std), recon.labels, 45.0)
    assert metrics["psnr"] >= 45.0
    assert mem.peak_bytes < 2 * 1024**3
    benchmark.extra_info.update({
        "psnr": metrics["psnr"], "peak_rss_bytes": mem.peak_bytes,
        "peak_rss_increase_bytes": mem.peak_bytes - baseline,
        "torch_threads": torch.get_num_threads(),
    })
