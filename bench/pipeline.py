"""The path of one cell, in one page:

    cell → private batch + victim model → client update → defense → observation
         → attack (timed alone) → score → record

The attacker receives the :class:`Observation` only; the private batch stays here.
"""

from __future__ import annotations

import copy
import math
import time
import traceback
from typing import Any

import torch

from bench.client import compute_update
from bench.contracts import DefenseContext, Observation, shared_update
from bench.data import denormalize, normalize, other_batches, sample_batch
from bench.domains import PixelBox
from bench.grants import PrivateSide, provide_grants
from bench.memory import PeakMemory
from bench.provenance import provenance
from bench.registry import ARCHS, ATTACKS, DATASETS, DEFENSES
from bench.scoring import score
from bench.suite import Cell
from bench.victim import victim_model

RECORD_VERSION = 1


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_cell(cell: Cell, device: torch.device, success_psnr: float,
             perceptual: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run one cell end to end and return its record; never raises for a failing attack.

    ``perceptual`` holds the suite's ``perceptual:`` settings (LPIPS on/off, net, weights).
    """
    record: dict[str, Any] = {"record_version": RECORD_VERSION, "kind": "attack", **cell.to_json(),
                              "cell_id": cell.cell_id, "attack_label": cell.attack.label,
                              "defense_label": cell.defense_label, "arch_label": cell.arch.label,
                              "dataset_label": cell.dataset.label,
                              "derived_seeds": cell.derived_seeds(),
                              "success_psnr": success_psnr, "provenance": provenance(device)}
    if cell.skip_reason:
        return {**record, "status": "skipped", "error": cell.skip_reason}
    # denormal floats (tiny sigmoid/LeakyReLU gradients) slow CPU arithmetic by orders of
    # magnitude; flushing them to zero changes nothing a metric can see
    torch.set_flush_denormal(True)
    timing: dict[str, float] = {}
    stage = "setup"
    try:
        t0 = time.perf_counter()
        seeds = cell.derived_seeds()
        gen = torch.Generator().manual_seed(seeds["scenario"])
        dataset = DATASETS.get(cell.dataset.name).cls(**cell.dataset.kwargs)
        meta = dataset.meta()
        x01, y = sample_batch(dataset, cell.batch_size, gen)
        arch = ARCHS.get(cell.arch.name).cls(**cell.arch.kwargs)
        model = victim_model(arch, dataset, meta, cell.victim, seeds["scenario"]).to(device)
        x = normalize(x01, meta.mean, meta.std).to(device)
        y = y.to(device)

        stage = "client"
        defenses = [DEFENSES.get(d.name).cls(**d.kwargs) for d in cell.defense]
        defense_gen = torch.Generator().manual_seed(seeds["defense"])
        client = cell.client_spec
        ctx = DefenseContext(model, x, y, client, defense_gen, meta.num_classes,
                             other_batches(dataset, meta, device, seeds["defense"]))
        for d in defenses:  # data-level defenses change what the client trains on
            ctx.x, ctx.y = d.transform_batch(ctx.x, ctx.y, ctx)
        update = compute_update(model, ctx.x, ctx.y, client)
        for d in defenses:  # update-level defenses change what it shares
            update = d.transform_update(update, ctx)
        _sync(device)
        timing["setup_seconds"] = time.perf_counter() - t0

        stage = "attack"
        attack = ATTACKS.get(cell.attack.name).cls(**cell.attack.kwargs)
        budget = dict(cell.budget)
        shared = shared_update(update)  # BN statistics and private metadata: by grant only
        obs = Observation(
            model=copy.deepcopy(model), update=shared, batch_size=cell.batch_size,
            domain=PixelBox(meta.shape, meta.mean, meta.std), num_classes=meta.num_classes,
            client=client, grants=provide_grants(cell.granted, PrivateSide(x, y, update)),
            device=device, generator=torch.Generator().manual_seed(seeds["attack"]),
            max_iterations=budget.get("max_iterations"),
            max_grad_evals=budget.get("max_grad_evals"),
        )
        with PeakMemory(device) as mem:
            _sync(device)
            t1 = time.perf_counter()
            recon = attack.reconstruct(obs)
            _sync(device)
            timing["attack_seconds"] = time.perf_counter() - t1

        stage = "score"
        t2 = time.perf_counter()
        images = recon.data.detach().cpu().float()
        finite = bool(torch.isfinite(images).all()) and not recon.info.get("diverged", False)
        record.update({
            "iterations": recon.iterations, "grad_evals": recon.grad_evals,
            "loss_trace": [v if math.isfinite(v) else None for v in recon.loss_trace],
            "attack_info": _jsonable(recon.info), "defense_info": _jsonable(update.info),
            "peak_memory_bytes": mem.peak_bytes, "memory_kind": mem.kind,
        })
        if not finite:
            record.update(status="diverged", error="the attack's loss or image became NaN/inf",
                          metrics=None)
        else:
            metrics = score(x01, y.cpu(), denormalize(images, meta.mean, meta.std),
                            recon.labels, success_psnr)
            metrics.update(perceptual_metrics(x01, denormalize(images, meta.mean, meta.std),
                                              metrics["matching"], perceptual or {}))
            record.update(status="ok", error=None, metrics=metrics)
            record["_images"] = (x01, denormalize(images, meta.mean, meta.std), metrics)
        timing["score_seconds"] = time.perf_counter() - t2
    except Exception as e:  # a failing cell becomes a record, never a lost run
        record.update(status="error", error=f"{stage}: {type(e).__name__}: {e}",
                      traceback=traceback.format_exc(limit=8), metrics=None)
    record["timing"] = timing
    return record


def perceptual_metrics(x01: torch.Tensor, recon01: torch.Tensor, matching: list[int],
                       settings: dict[str, Any]) -> dict[str, Any]:
    """LPIPS of the matched pairs, or n/a with the one line that says how to supply weights."""
    if not settings.get("lpips", True):
        return {"lpips": None, "lpips_worst": None, "lpips_note": "LPIPS off in the suite"}
    from bench.perceptual import lpips_per_image, lpips_status

    net, weights = settings.get("lpips_net", "alex"), settings.get("lpips_weights")
    available, message = lpips_status(net, weights)
    if not available or len(matching) != len(x01):
        return {"lpips": None, "lpips_worst": None, "lpips_note": message}
    values = lpips_per_image(x01, recon01[torch.as_tensor(matching)], net, weights)
    if values is None:
        return {"lpips": None, "lpips_worst": None, "lpips_note": message}
    return {"lpips": sum(values) / len(values), "lpips_worst": max(values),
            "lpips_note": None, "per_image_lpips": values}


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, float) and not math.isfinite(v):
            v = None
        elif isinstance(v, torch.Tensor):
            v = v.tolist()
        out[k] = v
    return out
