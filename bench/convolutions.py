"""Which kernels run an attack's convolutions on the CPU: oneDNN (torch's default) or ATen's
native ones.

A gradient-matching attack differentiates through the network's backward pass thousands of
times; on a small network (DLG's LeNet: 12 channels, batch 1) each convolution is tiny and
oneDNN's per-call cost can dominate it, while on wider ones oneDNN wins. Which is faster
depends on the network and the CPU (``pytest tests/benchmarks/test_bench_trials.py -k
time_to_40db --benchmark-only`` measures both on DLG's setting), so it is a run option, not
a rule: ``leakbench run --cpu-conv native``. The two round differently, so a record says
which ran its attack (``provenance.cpu_conv``) and ``leakbench rerun`` uses the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

from bench.registry import LeakbenchError

CPU_CONV = ("onednn", "native")
DEFAULT_CPU_CONV = "onednn"


def check_cpu_conv(name: str) -> str:
    """``name`` when it is a known choice; otherwise a one-line LeakbenchError."""
    if name not in CPU_CONV:
        raise LeakbenchError(f"--cpu-conv: expected one of {', '.join(CPU_CONV)}, got {name!r}")
    return name


def stamp_cpu_conv(record: Any, device: torch.device, name: str) -> None:
    """Name the kernels in an attack record's provenance when its cell ran on the CPU."""
    if device.type == "cpu":
        record.provenance["cpu_conv"] = name


@contextlib.contextmanager
def cpu_convolutions(name: str, device: torch.device) -> Iterator[None]:
    """Run the block's CPU convolutions on ``name``'s kernels (CUDA is left alone); torch's
    setting is restored after."""
    check_cpu_conv(name)
    if device.type != "cpu" or name == DEFAULT_CPU_CONV:
        yield
        return
    before = torch.backends.mkldnn.enabled  # set alone: ``mkldnn.flags`` also sets TF32 (a
    torch.backends.mkldnn.enabled = False  # warning on every entry)
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before
