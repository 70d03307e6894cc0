"""Where a record came from: versions, commit, device and platform."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

import bench

CODE_PATHS = ("bench", "attacks", "defenses", "pyproject.toml")  # what a record's result runs


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of leakbench's own checkout, or None: installed as a package inside some
    other git repository (a project's .venv), ``rev-parse HEAD`` would name that project's
    commit, so the checkout must be rooted where ``bench/`` lies and track this file.
    ``<sha>-dirty`` when the code differs from the commit: a tracked file changed, or an
    untracked module under it (the registry imports every one); results may differ."""
    root = Path(bench.__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        out = _git(*args, timeout=5)
        return None if out is None or out.returncode != 0 else out.stdout.strip() or None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root or \
            git("ls-files", "--error-unmatch", "bench/provenance.py") is None:
        return None
    head = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=all", "--", *CODE_PATHS) or ""
    # a tracked file changed, or an untracked module the registry imports (a new attack)
    changed = any(not line.startswith("??") or line.endswith(".py")
                  for line in status.splitlines())
    return f"{head}-dirty" if head and changed else head


def _git(*args: str, timeout: float) -> subprocess.CompletedProcess | None:
    """``git args`` run in leakbench's checkout (text out), or None where it cannot run;
    --no-optional-locks: a status never holds the index lock against a user's commit."""
    root = Path(bench.__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(root), *args],
                              capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def code_differs(before: str, now: str) -> bool | None:
    """Whether leakbench's code (:data:`CODE_PATHS`) differs between two commits of its
    checkout; None where git cannot tell (no checkout, a commit it does not hold)."""
    out = _git("diff", "--quiet", before, now, "--", *CODE_PATHS, timeout=10)
    return None if out is None else {0: False, 1: True}.get(out.returncode)


def device_name(device: torch.device) -> str:
    """The device's name; a CUDA device this process cannot see (a Ray driver on a CPU
    machine writing a GPU task's failure record) is "cuda (remote)", not a crash."""
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return "cuda (remote)"
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else the platform's word)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_isa() -> str:
    """The instruction-set level torch's CPU kernels dispatch to (``AVX512``, ``AVX2``, …):
    what decides floating-point summation order, and so optimisation trajectories."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except AttributeError:  # torch < 2.1
        return "unknown"


KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
               "ONEDNN_DEFAULT_FPMATH_MODE", "DNNL_DEFAULT_FPMATH_MODE",
               "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "MKL_DEBUG_CPU_TYPE")
"""Environment variables that cap or fix the CPU kernels' paths (and so their rounding)."""


def cpu_fingerprint() -> dict[str, str]:
    """What makes two CPUs give bit-identical results: model, generation, kernel level and the
    caps set on the kernels, torch. A model name alone is too coarse: a virtual machine's
    "AMD EPYC" names several generations, whose oneDNN and MKL kernels may differ."""
    caps = ",".join(f"{k}={os.environ[k]}" for k in KERNEL_CAPS if os.environ.get(k))
    return {"cpu_model": cpu_model(), "cpu_generation": cpu_generation(), "isa": cpu_isa(),
            "kernel_caps": caps, "torch": torch.__version__.split("+")[0]}


@functools.lru_cache(maxsize=1)
def cpu_generation() -> str:
    """The CPU's vendor, family, model and stepping (``/proc/cpuinfo``), which tell apart
    generations sold under one model name; "unknown" where they cannot be read."""
    try:
        return generation_of(Path("/proc/cpuinfo").read_text())
    except OSError:
        return "unknown"


def generation_of(cpuinfo: str) -> str:
    """:func:`cpu_generation` from the text of ``/proc/cpuinfo`` (its first processor)."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip() and fields:
            break
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("vendor_id", "cpu family", "model", "stepping") and key not in fields:
            fields[key] = value.strip()
    return " ".join(f"{k.replace(' ', '_')}={v}" for k, v in fields.items()) or "unknown"


def cpu_affinity() -> str | None:
    """The CPUs this process may run on, as ranges ("0-3,8"): a pinned worker names its own
    core (:func:`bench.cores.worker_cores`); None where the platform has no affinity mask."""
    try:
        return cpu_ranges(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def cpu_ranges(cpus: Iterable[int]) -> str:
    """CPU numbers as ranges: {0, 1, 2, 8} -> "0-2,8"."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def provenance(device: torch.device) -> dict[str, Any]:
    return {
        "cpu_model": cpu_model(),
        "cpu_isa": cpu_isa(),
        "leakbench": bench.__version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "torchmetrics": _version("torchmetrics"),  # SSIM's border rule changed in 1.4.2
        "device": device.type,
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_affinity": cpu_affinity(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


OWN_PACKAGES = frozenset({"bench", "attacks", "defenses"})  # leakbench's top-level packages


def plugin_versions(cell: Any) -> dict[str, str]:
    """``{distribution: version}`` of the installed packages outside leakbench whose code
    ``cell`` runs: its attack, defense links, architecture and dataset, and the metrics that
    score it. A record names leakbench's commit; this names what else made its numbers (a
    plug-in changed under a finished record otherwise left no trace)."""
    from bench.metrics import METRICS  # the registries, loaded by now
    from bench.registry import REGISTRIES

    specs = [getattr(cell, "attack", None), *getattr(cell, "defense", ()),
             getattr(cell, "arch", None), getattr(cell, "dataset", None)]
    classes = [REGISTRIES[s.kind].get(s.name).cls for s in specs
               if s is not None and s.kind in REGISTRIES and s.name in REGISTRIES[s.kind]]
    if getattr(cell, "attack", None) is not None and cell.dataset.name in REGISTRIES["datasets"]:
        modality = REGISTRIES["datasets"].get(cell.dataset.name).cls.modality  # what scores it
        classes += [e.cls for e in METRICS.entries() if e.cls.modality == modality]
    found: dict[str, str] = {}
    for cls in classes:
        found.update(_distributions(cls.__module__.split(".")[0]))
    return dict(sorted(found.items()))


@functools.cache
def _distributions(top: str) -> dict[str, str]:
    if top in OWN_PACKAGES:
        return {}
    names = _top_level_distributions().get(top) or []
    found = {name: _version(name) or "unknown" for name in names}
    if found:
        return found
    module = sys.modules.get(top)  # on the path, not installed: its own version, if it says
    return {top: str(getattr(module, "__version__", None) or "unknown")}


@functools.cache
def _top_level_distributions() -> dict[str, list[str]]:
    """Import name → distributions, scanned once per process (0.1–0.2 s)."""
    return dict(importlib.metadata.packages_distributions())
