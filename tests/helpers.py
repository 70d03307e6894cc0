"""Test helpers: tiny suites, the CLI in a fresh interpreter, a plugin package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from bench.suite import Suite, parse_suite

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
