"""The path of one attack cell, in one page:

    observe: private batch + victim model → client update → defense chain → Observation
    attack:  Observation → Reconstruction (timed alone, peak memory)
    score:   de-normalise → one-to-one matching → registered metrics (outside the attack)
    record:  record + artifacts (the picture grid), returned to the runner, which writes them

``run_cell`` composes them; a batched engine or a test reuses each one. The attacker receives
the :class:`Observation` only; the private side stays in :class:`Observed`."""

from __future__ import annotations

import copy
import math
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from bench.cells.base import (
    CELL_FAILURES,
    RunOptions,
    cell_modality,
    dataset_meta,
    failure_text,
    fix_float_mode,
)
from bench.client import compute_update
from bench.contracts import (
    DatasetMeta,
    DefenseContext,
    Observation,
    Reconstruction,
    observed_batch,
    shared_update,
)
from bench.convolutions import cpu_convolutions, stamp_cpu_conv
from bench.data import input_centre, other_batches, sample_batch
from bench.defend import defend, diverged_reason
from bench.domains import domain_of
from bench.grants import LABELS, PrivateSide, provide_grants
from bench.json_values import jsonable
from bench.memory import PeakMemory
from bench.metrics import SuccessRule
from bench.perceptual import perceptual_metrics
from bench.pictures import cell_artifacts
from bench.records import AttackRecord, Outcome, input_meta, new_record
from bench.returns import checked_reconstructions
from bench.scoring import floor_metrics, score
from bench.stages import ATTACK, SETUP, STAGE
from bench.text_scoring import (
    score_text,
    success_fields,
    success_rule,
    text_floor_metrics,
    text_pairs,
)
from bench.victim import victim_model


@dataclass
class Observed:
    """One cell observed: the attacker's view, and the private side kept apart for scoring.

    On a secure aggregate ``x01`` (and the private side's batch) holds every aggregated
    image, the private client's own first: ``own`` is their index range.
    """

    obs: Observation
    private: PrivateSide  # the batch in model-input space and the full (defended) update
    x01: torch.Tensor  # the observed batch in data space (pixels in [0,1], token ids), on the CPU
    meta: DatasetMeta
    own: slice = field(default_factory=lambda: slice(None))  # the client's own, within x01

    @property
    def clients(self) -> int:
        return self.obs.clients

    @property
    def text(self) -> bool:
        return self.meta.modality == "text"


@dataclass
class Attacked:
    """An attack's output and what it cost."""

    recon: Reconstruction
    seconds: float
    peak_memory_bytes: int
    memory_kind: str


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def observe(cell: Any, device: torch.device) -> Observed:
    """The private batch and victim model from the scenario seed, the client's update through
    the defense chain (defense seed), and the observation its threat model grants.

    A secure aggregate makes the observed batch K·B: the observation says so (``batch_size``,
    ``clients``); the other clients' batches join the private side after the client's own."""
    seeds = cell.derived_seeds()
    dataset = cell.dataset.build()
    meta = dataset_meta(cell.dataset, dataset)  # checked again: a rerun skips the expansion
    held: set[int] = set()  # the private batch's images: no later draw repeats them
    x01, y = sample_batch(dataset, cell.batch_size, torch.Generator().manual_seed(
        seeds["scenario"]), held, meta)
    model = victim_model(cell.arch.build(), dataset, meta, cell.victim,
                         seeds["scenario"]).to(device)
    domain = domain_of(meta)
    x, y = domain.encode(x01).to(device), y.to(device)
    client = cell.client_spec
    others = other_batches(dataset, meta, device, seeds["defense"], held)
    ctx = DefenseContext(model, x, y, client, torch.Generator().manual_seed(seeds["defense"]),
                         meta.num_classes, others, centre=input_centre(meta, x))
    chain = [d.build() for d in cell.defense]
    update = defend(chain, ctx, lambda xb, yb: compute_update(model, xb, yb, client))
    batch = observed_batch(chain, cell.batch_size)
    if cell.batch_size + sum(len(ox) for ox, _ in ctx.aggregated) != batch:
        raise ValueError(f"the defense chain declares an observed batch of {batch} but "
                         f"aggregated {len(ctx.aggregated)} further batches")
    x_all = torch.cat([x, *(ox.to(device) for ox, _ in ctx.aggregated)])
    y_all = torch.cat([y, *(oy.to(device) for _, oy in ctx.aggregated)])
    x01_all = torch.cat([x01, *(domain.decode(ox.cpu()) for ox, _ in ctx.aggregated)])
    private = PrivateSide(x_all, y_all, update, dataset)
    budget = dict(cell.budget)
    obs = Observation(
        model=copy.deepcopy(model), update=shared_update(update), batch_size=batch,
        domain=domain, num_classes=meta.num_classes,
        client=client, grants=provide_grants(cell.granted, private), device=device,
        generator=torch.Generator().manual_seed(seeds["attack"]),
        max_iterations=budget.get("max_iterations"), max_grad_evals=budget.get("max_grad_evals"),
        clients=batch // cell.batch_size)
    return Observed(obs, private, x01_all, meta, slice(0, cell.batch_size))


def attack(cell: Any, obs: Observation) -> Attacked:
    """Run the cell's attack on the observation alone: timed (CUDA-synchronised), with peak
    memory."""
    attacker = cell.attack.build()
    with PeakMemory(obs.device) as mem:
        _sync(obs.device)
        t0 = time.perf_counter()
        recon = attacker.reconstruct(obs)
        _sync(obs.device)
        seconds = time.perf_counter() - t0
    (recon,) = checked_reconstructions(attacker, [recon], [obs], "reconstruct")  # off the clock
    return Attacked(recon, seconds, mem.peak_bytes, mem.kind)


def score_attack(observed: Observed, recon: Reconstruction, options: RunOptions
                 ) -> tuple[dict[str, Any], torch.Tensor] | None:
    """Metrics of the reconstruction against the private batch, and the reconstruction in
    data space ([0,1] pixels, token ids); None when it is not finite (a diverged attack).
    Text is scored by :func:`bench.text_scoring.score_text`."""
    data = recon.data.detach().cpu()
    if not bool(torch.isfinite(data).all()) or recon.info.get("diverged", False):
        return None
    if observed.text:
        ids = observed.obs.domain.decode(data)
        rule = success_rule("text", options.success)
        return score_text(observed.x01, ids, observed.meta.vocab, rule), ids
    recon01 = observed.obs.domain.decode(data.float())
    y = observed.private.y.cpu()
    rule = success_rule("image", options.success)  # a suite's text rule is not the images'
    labels = None if LABELS in observed.obs.grants else recon.labels  # granted: not recovered
    metrics = score(observed.x01, y, recon01, labels, success=rule)
    if observed.clients > 1:
        metrics.update(own_metrics(metrics, observed.own, rule))
    metrics.update(perceptual_metrics(observed.x01, recon01, metrics["matching"],
                                      dict(options.perceptual)))
    return metrics, recon01


def own_metrics(metrics: dict[str, Any], own: slice, success: SuccessRule) -> dict[str, Any]:
    """On an aggregate, what the attack recovered of the private client's own images: their
    mean matched PSNR and how many reach the success rule (per image; PSNR ≥ 20 dB when the
    rule is not on a per-image metric)."""
    per_image = metrics["per_image"]
    rule = success if success.metric in per_image else SuccessRule()
    values = per_image[rule.metric][own]
    psnrs = per_image["psnr"][own]
    return {"own_images": len(psnrs), "own_psnr": sum(psnrs) / len(psnrs),
            "own_recovered": sum(bool(rule.holds(v)) for v in values)}


def record_attack(cell: Any, device: torch.device, options: RunOptions, status: str,
                  error: str | None, **fields: Any) -> AttackRecord:
    """The attack cell's record: header, the success rule (its dataset's modality's), and the
    outcome fields."""
    record = new_record(cell, device, status, error,
                        **success_fields(cell_modality(cell), options.success), **fields)
    stamp_cpu_conv(record, device, options.cpu_conv)  # kernels round differently
    return record


def run_cell(cell: Any, device: torch.device, options: RunOptions) -> Outcome:
    """observe → attack → score → record, each stage timed; never raises for a failing
    component (the record says which stage failed)."""
    if cell.skip_reason:
        return Outcome(record_attack(cell, device, options, "skipped", cell.skip_reason))
    return run_trials([cell], device, options)[0]


def run_trials(cells: list[Any], device: torch.device, options: RunOptions) -> list[Outcome]:
    """:func:`iter_trials`'s outcomes, in the order of ``cells``."""
    done = dict(iter_trials(cells, device, options))
    return [done[i] for i in range(len(cells))]


def iter_trials(cells: list[Any], device: torch.device, options: RunOptions,
                marks: bool = False) -> Iterator[tuple[int, Any]]:
    """Cells that differ only by seed, attacked as trials of one vectorised pass when the
    attack vectorises (:meth:`~bench.contracts.Attack.reconstruct_trials`): each is observed,
    scored and recorded on its own, and the pass's time is divided between them by their
    trials' clocks (equally where the attack keeps none).
    ``(index in cells, outcome)`` as each cell finishes, so an executor can keep what is done
    when a later cell hangs. A cell whose observation fails is an error record at once; a
    pass that raises is re-run cell by cell, so no cell's failure takes down its
    batch-mates, and their records say why (``trial_batch.fallback``). ``marks``: also
    ``(STAGE, stage)`` as the cells enter setup and attack (for an executor that stops a task)."""
    fix_float_mode()
    runs = [_Run(cell) for cell in cells]
    if marks:
        yield STAGE, SETUP
    for run in runs:
        run.guard(SETUP, lambda r: r.observe(device))
    for i, r in enumerate(runs):
        if r.error is not None:
            yield i, r.finish(device, options)
    live = [(i, r) for i, r in enumerate(runs) if r.error is None]
    if marks and live:
        yield STAGE, ATTACK
    if len(live) > 1:
        states = [_generator_state(r) for _, r in live]
        try:
            with cpu_convolutions(options.cpu_conv, device):
                _attack_together([r for _, r in live], device)
        except CELL_FAILURES as e:  # re-run alone, from the same dummies: a failing cell
            why = failure_text(e)  # records its own error
            ids = [r.cell.cell_id for _, r in live]
            for (_, r), state in zip(live, states):
                r.fields["trial_batch"] = {"cells": ids, "trials": len(ids),
                                           "fallback": " ".join(why.split())[:300]}
                r.done, r.time_scale = None, 1.0
                if state is not None:
                    r.observed.obs.generator.set_state(state)
    for i, r in live:
        if r.done is None:
            with cpu_convolutions(options.cpu_conv, device):
                r.guard(ATTACK, lambda r: r.attack_alone())
        yield i, r.finish(device, options)


def _generator_state(run: _Run) -> torch.Tensor | None:
    generator = run.observed.obs.generator if run.observed is not None else None
    return generator.get_state() if generator is not None else None


def _attack_together(runs: list[_Run], device: torch.device) -> None:
    cell0 = runs[0].cell
    with PeakMemory(device) as mem:
        _sync(device)
        t0 = time.perf_counter()
        attacker = cell0.attack.build()
        observations = [r.observed.obs for r in runs]
        recons = attacker.reconstruct_trials(observations)
        _sync(device)
        seconds = time.perf_counter() - t0
    recons = checked_reconstructions(attacker, recons, observations)  # off the pass's clock
    clocks = [recon.info.pop("trial_seconds", None) for recon in recons]
    by_clock = all(isinstance(c, (int, float)) and math.isfinite(c) and c >= 0
                   for c in clocks) and sum(clocks) > 0
    # each cell's trials' clocks (an evaluation's time split among the trials in it), scaled
    # so that the cells add up to the pass; an attack that keeps none: equal parts
    scale = seconds / sum(clocks) if by_clock else 1.0 / len(runs)
    share = {"cells": [r.cell.cell_id for r in runs], "trials": len(runs),
             "pass_seconds": seconds, "time_share": "trial clock" if by_clock else "equal",
             "peak_memory": "pass"}  # peak_memory_bytes: the whole pass's, on every cell
    for r, recon, clock in zip(runs, recons, clocks):
        mine = clock * scale if by_clock else seconds / len(runs)
        r.done = Attacked(recon, mine, mem.peak_bytes, mem.kind)
        r.fields["trial_batch"], r.time_scale = share, scale


@dataclass
class _Run:
    """One cell on its way through the stages (a batched pass holds several)."""

    cell: Any
    observed: Observed | None = None
    done: Attacked | None = None
    error: str | None = None
    status: str = "error"  # until scored: "ok" or "diverged"
    time_scale: float = 1.0  # the attack's times (convergence, snapshots) to the cell's share
    timing: dict[str, float] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)  # the record's outcome fields
    artifacts: dict[str, bytes] = field(default_factory=dict)

    def guard(self, stage: str, step: Any) -> None:
        """Run ``step(self)``; an exception becomes this cell's error (never a lost run)."""
        try:
            step(self)
        except CELL_FAILURES as e:
            self.error = f"{stage}: {failure_text(e)}"
            self.fields.update(traceback=traceback.format_exc(limit=8), metrics=None)

    def observe(self, device: torch.device) -> None:
        t0 = time.perf_counter()
        self.observed = observe(self.cell, device)
        x01, meta = self.observed.x01, self.observed.meta  # failed seeds count at the floor
        floors = text_floor_metrics(x01, meta.vocab) if self.observed.text else floor_metrics(x01)
        self.fields.update(floor_metrics=floors, input_meta=input_meta(meta))
        _sync(device)
        self.timing["setup_seconds"] = time.perf_counter() - t0

    def attack_alone(self) -> None:
        assert self.observed is not None
        self.done = attack(self.cell, self.observed.obs)

    def finish(self, device: torch.device, options: RunOptions) -> Outcome:
        if self.error is None and self.done is not None:
            self.guard("score", lambda r: r._score(options))
        status = "error" if self.error is not None else self.status
        info = self.done.recon.info if self.done is not None else None
        said = info.get("diverged_reason") if isinstance(info, dict) else None
        error = self.error or (diverged_reason(self.observed and self.observed.obs.update,
                                               self.cell.defense_label, said)
                               if status == "diverged" else None)
        record = record_attack(self.cell, device, options, status, error, timing=self.timing,
                               **self.fields)
        return Outcome(record, self.artifacts)

    def _score(self, options: RunOptions) -> None:
        assert self.observed is not None and self.done is not None
        observed, done = self.observed, self.done
        self.timing["attack_seconds"] = done.seconds
        t2 = time.perf_counter()
        recon = done.recon
        snapshots = recon.info.pop("snapshots", None) or []
        recon.info.pop("trial_seconds", None)  # a lone cell's clock: its attack_seconds
        converged = recon.info.pop("converged_at", None)  # the record's, on its clock (below)
        self.fields.update(
            iterations=recon.iterations, grad_evals=recon.grad_evals,
            loss_trace=jsonable(list(recon.loss_trace)),  # non-finite losses as None
            attack_info=jsonable(recon.info),
            defense_info=jsonable(observed.private.update.info),
            peak_memory_bytes=done.peak_memory_bytes, memory_kind=done.memory_kind)
        if converged:  # the attack's seconds, as the pass was divided for attack_seconds
            self.fields["converged_at"] = {
                **converged, **({"seconds": converged["seconds"] * self.time_scale}
                                if converged.get("seconds") is not None else {})}
        if observed.clients > 1 and not observed.text:
            self.fields["aggregate"] = {"clients": observed.clients,
                                        "observed_batch": observed.obs.batch_size,
                                        "own_images": [observed.own.start, observed.own.stop]}
        scored = score_attack(observed, recon, options)
        if scored is None:
            self.status = "diverged"
        else:
            metrics, recon01 = scored
            self.status, self.fields["metrics"] = "ok", metrics
            if observed.text:  # sentences side by side instead of a picture
                self.fields["text_pairs"] = text_pairs(observed.x01, recon01,
                                                       metrics["matching"], observed.meta.vocab)
                self.timing["score_seconds"] = time.perf_counter() - t2
                return
            pictured, self.artifacts = cell_artifacts(self.cell.cell_id, observed.x01, recon01,
                                                      metrics["matching"])
            self.fields.update(pictured)
            self.fields["curve"] = quality_curve(observed, recon, snapshots, self.time_scale,
                                                 metrics, done.seconds, options)
        self.timing["score_seconds"] = time.perf_counter() - t2


def quality_curve(observed: Observed, recon: Reconstruction,
                  snapshots: list[tuple[int, float, torch.Tensor]], time_scale: float,
                  final: dict[str, Any], seconds: float, options: RunOptions
                  ) -> list[dict[str, float]]:
    """PSNR against compute: each snapshot the attack kept (its evaluations, and its seconds
    times ``time_scale``, the cell's share of a pass), scored here, outside the attack; then
    the final estimate."""
    points = []
    for evals, elapsed, data in snapshots:
        if not bool(torch.isfinite(data).all()):
            continue
        snap01 = observed.obs.domain.decode(data.detach().cpu().float())
        m = score(observed.x01, observed.private.y.cpu(), snap01, None,  # its PSNR alone
                  success=success_rule("image", options.success))
        points.append({"grad_evals": evals, "seconds": elapsed * time_scale,
                       "psnr": m["psnr"]})
    points.append({"grad_evals": recon.grad_evals, "seconds": seconds, "psnr": final["psnr"],
                   "final": True})
    return points
