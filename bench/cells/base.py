"""The unit of work: a cell kind's protocol and the registry of kinds.

Every kind (the attack cell, the utility cell, later batched or text cells) has an identity,
round-trips through JSON (a worker on another machine rebuilds it), and runs to an
:class:`~bench.records.Outcome`. The runner and the executors know only this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch

from bench.contracts import DatasetMeta
from bench.convolutions import stamp_cpu_conv
from bench.metrics import SuccessRule
from bench.records import Outcome, new_record
from bench.registry import DATASETS, LeakbenchError
from bench.returns import meta_problem
from bench.text_scoring import success_fields


@dataclass(frozen=True)
class RunOptions:
    """Suite-level settings every cell of a run shares (they are not part of cell identity)."""

    success: SuccessRule = field(default_factory=SuccessRule)
    perceptual: tuple[tuple[str, Any], ...] = ()
    cpu_conv: str = "onednn"  # the attack's CPU convolution kernels (bench.convolutions)

    @property
    def success_psnr(self) -> float | None:
        """The PSNR threshold where the rule is on PSNR (records keep it for the tables)."""
        return self.success.threshold if self.success.metric == "psnr" else None


class CellKind(Protocol):
    """What the runner, the executors and the store need from a unit of work."""

    kind: ClassVar[str]
    suite: str
    skip_reason: str | None

    @property
    def cell_id(self) -> str: ...

    def identity(self) -> dict[str, Any]: ...

    def derived_seeds(self) -> dict[str, int]: ...

    def describe(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CellKind: ...

    def with_skip(self, reason: str | None) -> CellKind: ...

    def run(self, device: torch.device, options: RunOptions) -> Outcome:
        """Run the cell; never raises for a failing component (the outcome says so)."""
        ...


CELL_KINDS: dict[str, type] = {}


def fix_float_mode() -> None:
    """Flush denormal floats to zero, at the start of every cell of every kind.

    Denormals (tiny sigmoid/LeakyReLU gradients) slow CPU arithmetic by orders of magnitude.
    Flushing them changes results (a utility run under ``quantize: sign`` takes the sign of a
    flushed entry as 0), so every cell must run under the same setting: left to a worker's
    history, a cell computed differently after an attack cell than in a fresh worker. The
    setting is per thread; threads created afterwards inherit it, so a worker sets it before
    torch's thread pool exists too (the process and Ray workers, and ``leakbench run`` and
    ``rerun`` for cells run inline): a pool thread made before keeps denormals, and its
    share of each parallel operation computed otherwise.

    CUDA arithmetic is strict float32: TF32, cuDNN's default for convolutions on Ampere and
    later GPUs, rounds their inputs to 10 mantissa bits (about 1e-3 relative), which the
    client's update and a gradient-matching attack's second-order gradients inherit: it caps
    a reconstruction's PSNR and makes a CUDA record incomparable with a CPU one."""
    torch.set_flush_denormal(True)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def register_cell_kind(name: str):  # noqa: ANN201 - a class decorator
    """Register a cell class under ``name``; records carry it as ``kind``."""

    def wrap(cls: type) -> type:
        if name in CELL_KINDS:
            raise LeakbenchError(f"cell kind {name!r} is registered twice")
        cls.kind = name
        CELL_KINDS[name] = cls
        return cls

    return wrap


def cell_from_json(d: dict[str, Any]) -> CellKind:
    """Rebuild a cell of any registered kind from its JSON (records before kinds: attack)."""
    kind = d.get("kind", "attack")
    if kind not in CELL_KINDS:
        raise LeakbenchError(f"unknown cell kind {kind!r}; known: {', '.join(sorted(CELL_KINDS))}")
    return CELL_KINDS[kind].from_json(d)


def dataset_meta(spec: Any, dataset: Any = None) -> DatasetMeta:
    """The metadata of the dataset ``spec`` builds (or of ``dataset``, built from it),
    refused in one line naming the dataset where it cannot describe its data
    (:func:`bench.returns.meta_problem`): a mean per channel missing or a std of 0 had ended
    in torch's shape errors or NaN cells."""
    meta = (dataset if dataset is not None else spec.build()).meta()
    problem = meta_problem(meta)
    if problem:
        raise LeakbenchError(f"dataset {spec.label}: {problem}")
    return meta


def cell_modality(cell: Any) -> str:
    """"image" or "text": the modality of an attack cell's dataset."""
    return DATASETS.get(cell.dataset.name).cls.modality


def failure_outcome(cell: CellKind, status: str, error: str, options: RunOptions,
                    elapsed: float, device: torch.device | None = None) -> Outcome:
    """The outcome of a cell that produced none itself: skipped, timed out, or its worker
    died (``device``: where it was to run, for the provenance)."""
    fields: dict[str, Any] = {}
    if cell.kind == "attack":  # its dataset's success rule, as the pipeline's records
        fields = success_fields(cell_modality(cell), options.success)
    device = device or torch.device("cpu")
    record = new_record(cell, device, status, error, timing={"wall_seconds": elapsed}, **fields)
    if cell.kind == "attack":  # as the pipeline's own records
        stamp_cpu_conv(record, device, options.cpu_conv)
    return Outcome(record)


CELL_FAILURES = (Exception, SystemExit)
"""What a cell's own code may raise and the cell records: any exception, and ``sys.exit()``
called in a component (under ``--jobs 0`` it had ended the whole run, with no record and no
summary; in a worker process it was a dead worker). KeyboardInterrupt still stops the run."""


def failure_text(e: BaseException) -> str:
    """An exception as a record's error: ``RuntimeError: boom``; ``SystemExit: sys.exit(3)
    called inside the cell``. An exit that is the process being told to stop is raised again:
    Ray's SIGTERM handler (a node drained, ``ray stop``) raises a SystemExit carrying
    ``ray_terminate_msg``; recorded, it would blame the cell and keep Ray from retrying."""
    if isinstance(e, SystemExit):
        if hasattr(e, "ray_terminate_msg"):
            raise e
        return f"SystemExit: sys.exit({'' if e.code is None else repr(e.code)}) called inside " \
               "the cell"
    return f"{type(e).__name__}: {e}"
