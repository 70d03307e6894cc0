"""Test helpers: tiny suites, observations built as the pipeline builds them, the CLI in a
fresh interpreter, a plugin package."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml

from bench.client import compute_update
from bench.contracts import DefenseContext, Observation, shared_update
from bench.data import normalize, other_batches, sample_batch
from bench.domains import PixelBox
from bench.grants import PrivateSide, provide_grants
from bench.registry import ARCHS, DATASETS, DEFENSES
from bench.suite import Cell, Suite, parse_suite
from bench.victim import victim_model

ROOT = Path(__file__).resolve().parent.parent


TINY_SUITE = {
    "seeds": 1,
    "batch_size": 1,
    "datasets": [{"photos": {"size": 16}}],
    "archs": ["lenet"],
    "defenses": ["none"],
    "attacks": [{"dlg": {"steps": 2}}],
}
"""One cell: DLG for two steps on LeNet and a 16-pixel photo crop."""


def make_suite(**overrides) -> Suite:
    """A minimal suite (one cell unless axes are widened) for fast tests."""
    raw = {"name": "t", **TINY_SUITE, "timeout": 120, **overrides}
    return parse_suite(raw, source="test")


CPU = torch.device("cpu")


def observe_tiny(cell: Cell, device: torch.device = CPU) -> tuple[Observation, PrivateSide]:
    """The attacker's observation of ``cell`` and the private side it came from, built step
    for step as ``bench.pipeline.run_cell`` builds them (private batch, victim model, client
    update, defense chain, grants). The one place tests build observations of a cell."""
    seeds = cell.derived_seeds()
    dataset = DATASETS.get(cell.dataset.name).cls(**cell.dataset.kwargs)
    meta = dataset.meta()
    gen = torch.Generator().manual_seed(seeds["scenario"])
    x01, y = sample_batch(dataset, cell.batch_size, gen)
    arch = ARCHS.get(cell.arch.name).cls(**cell.arch.kwargs)
    model = victim_model(arch, dataset, meta, cell.victim, seeds["scenario"]).to(device)
    x, y = normalize(x01, meta.mean, meta.std).to(device), y.to(device)
    defenses = [DEFENSES.get(d.name).cls(**d.kwargs) for d in cell.defense]
    client = cell.client_spec
    ctx = DefenseContext(model, x, y, client, torch.Generator().manual_seed(seeds["defense"]),
                         meta.num_classes, other_batches(dataset, meta, device, seeds["defense"]))
    for d in defenses:
        ctx.x, ctx.y = d.transform_batch(ctx.x, ctx.y, ctx)
    update = compute_update(model, ctx.x, ctx.y, client)
    for d in defenses:
        update = d.transform_update(update, ctx)
    private = PrivateSide(x, y, update)
    budget = dict(cell.budget)
    obs = Observation(
        model=copy.deepcopy(model), update=shared_update(update), batch_size=cell.batch_size,
        domain=PixelBox(meta.shape, meta.mean, meta.std), num_classes=meta.num_classes,
        client=client, grants=provide_grants(cell.granted, private), device=device,
        generator=torch.Generator().manual_seed(seeds["attack"]),
        max_iterations=budget.get("max_iterations"), max_grad_evals=budget.get("max_grad_evals"))
    return obs, private


def write_suite(path: Path, **overrides) -> Path:
    raw = {**TINY_SUITE, **overrides}
    path.write_text(yaml.safe_dump(raw))
    return path


PLUGIN = '''
"""A third-party package adding components to leakbench through entry points."""
import time

import torch

from bench.contracts import Attack, Defense, Reconstruction
from bench.registry import Param, register_attack, register_defense


@register_attack("boom")
class Boom(Attack):
    """Always raises: tests that a failing attack becomes a failure record."""

    def reconstruct(self, obs):
        raise RuntimeError("boom goes the attack")


@register_attack("sleepy")
class Sleepy(Attack):
    """Sleeps past any timeout."""

    params = (Param("seconds", float, 60.0, low=0.0),)

    def reconstruct(self, obs):
        time.sleep(self.seconds)
        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))


@register_attack("nan")
class NaNAttack(Attack):
    """Returns a NaN image: a diverged run."""

    def reconstruct(self, obs):
        return Reconstruction(torch.full((obs.batch_size, *obs.input_shape), float("nan")))


@register_defense("flip")
class Flip(Defense):
    """Negates the update (a plugin defense)."""

    def transform_update(self, update, ctx):
        out = update.clone()
        out.tensors = [-t for t in update.tensors]
        return out
'''


def run_cli(*args: str, extra_path: Path | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``leakbench`` in a fresh interpreter, as a user would."""
    env = dict(os.environ)
    paths = [str(ROOT)] + ([str(extra_path)] if extra_path else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True,
                          text=True, cwd=cwd or ROOT, env=env, timeout=timeout)
