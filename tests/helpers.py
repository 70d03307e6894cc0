"""Test helpers: tiny suites, observations built as the pipeline builds them, the CLI in a
fresh interpreter, a plugin package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

from bench.cells import RunOptions
from bench.cells.attack import AttackCell
from bench.contracts import Observation
from bench.grants import PrivateSide
from bench.metrics import SuccessRule
from bench.pipeline import attack, observe, run_cell, score_attack
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


THOUSAND_PER_SEED = {**TINY_SUITE, "batch_size": [1, 2, 3, 4, 5], "archs": ["lenet", "mlp"],
                     "defenses": ["none", {"prune": {"ratio": [
                         0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]}}],
                     "attacks": [{"dlg": {"steps": list(range(1, 11))}}]}
"""A grid of 1 000 cells per seed (5 batch sizes x 2 archs x 10 defenses x 10 attacks), for
tests and benchmarks of expansion at scale."""


def make_suite(**overrides) -> Suite:
    """A minimal suite (one cell unless axes are widened) for fast tests."""
    raw = {"name": "t", **TINY_SUITE, "timeout": 120, **overrides}
    return parse_suite(raw, source="test")


CPU = torch.device("cpu")


def observe_tiny(cell: AttackCell, device: torch.device = CPU
                 ) -> tuple[Observation, PrivateSide]:
    """The attacker's observation of ``cell`` and the private side it came from, through the
    pipeline's own :func:`bench.pipeline.observe`."""
    observed = observe(cell, device)
    return observed.obs, observed.private


def run_record(cell: AttackCell, success_psnr: float = 20.0) -> dict:
    """Run one attack cell inline on the CPU; its record as JSON."""
    options = RunOptions(SuccessRule("psnr", success_psnr))
    return run_cell(cell, CPU, options).record.to_json()


def scored_path(cell: AttackCell) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """observe → attack → score through the pipeline's functions: the private batch and the
    reconstruction in [0,1], and the metrics (the cell must not diverge)."""
    observed = observe(cell, CPU)
    scored = score_attack(observed, attack(cell, observed.obs).recon, RunOptions())
    assert scored is not None, "the attack diverged"
    metrics, recon01 = scored
    return observed.x01, recon01, metrics


def write_plugin(root: Path, module: str, source: str, entry_points: str) -> Path:
    """An installed-looking plugin in ``root``: ``module``.py and its dist-info with the given
    ``entry_points.txt`` (leakbench finds components through these groups)."""
    import textwrap

    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{module}-0.0.1.dist-info"
    info.mkdir()
    name = module.replace("_", "-")
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    (info / "top_level.txt").write_text(f"{module}\n")  # its import name, as a wheel says
    return root


def write_suite(path: Path, **overrides) -> Path:
    raw = {**TINY_SUITE, **overrides}
    path.write_text(yaml.safe_dump(raw))
    return path


PLUGIN = '''
"""A third-party package adding components to leakbench through entry points."""
import os
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


_LONE_RUNS = [0]


@register_attack("flaky_pass")
class FlakyPass(Attack):
    """Its batched pass raises, so its cells re-run alone; the third lone run in a process
    sleeps past any timeout (``dies``: kills its process instead, as an OOM kill would)."""

    params = (Param("dies", bool, False),)
    batched_trials = frozenset({"image"})

    def reconstruct_trials(self, observations):
        raise RuntimeError("the batched pass fails")

    def reconstruct(self, obs):
        _LONE_RUNS[0] += 1
        if _LONE_RUNS[0] == 3:
            if self.dies:
                time.sleep(1.0)  # the second cell's outcome is in the pipe by now
                os._exit(9)
            time.sleep(600)
        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape))


@register_attack("opaque")
class Opaque(Attack):
    """Reports an object JSON cannot hold beside a numpy scalar it can (as a number)."""

    def reconstruct(self, obs):
        import numpy as np

        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape),
                              info={"scale": np.float32(0.5), "handle": object()})


@register_attack("nan")
class NaNAttack(Attack):
    """Returns a NaN image: a diverged run."""

    def reconstruct(self, obs):
        return Reconstruction(torch.full((obs.batch_size, *obs.input_shape), float("nan")))


@register_defense("stall")
class Stall(Defense):
    """Hangs past any timeout before the attack sees an update (``dies``: kills its process
    instead, as an OOM kill in a defense would)."""

    params = (Param("dies", bool, False),)

    def transform_update(self, update, ctx):
        if self.dies:
            os._exit(9)
        time.sleep(600)
        return update


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


def require_pdflatex() -> None:
    """Skip the calling test where pdflatex is missing, except under .ci/run (which installs
    it and sets LEAKBENCH_REQUIRE_PDFLATEX): there a missing pdflatex fails."""
    import shutil

    import pytest

    if shutil.which("pdflatex") is None:
        if os.environ.get("LEAKBENCH_REQUIRE_PDFLATEX"):
            pytest.fail("pdflatex is not installed, and LEAKBENCH_REQUIRE_PDFLATEX is set")
        pytest.skip("pdflatex is not installed (apt-get install texlive-latex-base "
                    "texlive-latex-recommended; .ci/run does)")


def pdflatex(folder: Path, body: str, preamble: str = "\\usepackage{booktabs}") -> str:
    """Compile a document of ``body`` in ``folder`` with pdflatex's defaults (UTF-8 input,
    OT1 fonts), halting on the first error; the log, after asserting that it compiled
    without a missing glyph."""
    (folder / "doc.tex").write_text(f"\\documentclass{{article}}\n{preamble}\n"
                                    f"\\begin{{document}}\n{body}\n\\end{{document}}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                           "doc.tex"], cwd=folder, capture_output=True, encoding="utf-8",
                          errors="replace", timeout=120)
    assert done.returncode == 0, done.stdout[-3000:]
    log = (folder / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log, log[-3000:]
    return log


def one_line(capsys: Any, *args: str) -> str:
    """The CLI's error for ``args``, run in this process: exit 2, one line on stderr starting
    ``leakbench: error:``, no traceback."""
    from bench.cli import main

    code = main(list(args))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("leakbench: error: "), err
    return lines[0]
