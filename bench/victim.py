"""The victim model of a cell: its architecture at random init, or after N training steps.

``trained:N`` is produced by leakbench itself: N steps of SGD (batch 32, lr 0.05, momentum
0.9, weight decay 5e-4, BatchNorm in train mode) with the client's training loss on the
dataset's training split, normalised with the dataset's mean/std as the pipeline does.
The initial weights and the order of the mini-batches (a fresh permutation per pass over
the split) both derive from the cell's scenario seed, and training runs on the CPU, so
the result does not depend on the device that runs the attack.

The trained weights are cached under ``$LEAKBENCH_CACHE/victims/`` (default
``~/.cache/leakbench/victims/``), one file per key: a hash of the architecture's name and
parameters, the dataset's name and parameters, N, the seed and the training
hyperparameters. The cache is :mod:`bench.cache`'s (a lock while training, an atomic
write), so parallel workers that need the same victim train it once and never leave a torn
file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.cache import cache_root, cached, load_weights, settings_key, state_bytes
from bench.client import set_bn_mode, training_loss
from bench.contracts import Arch, Dataset, DatasetMeta
from bench.data import stack_items
from bench.domains import domain_of
from bench.returns import checked_model, meta_device_probe, name_of

# Training hyperparameters of ``trained:N``; every one of them is part of the cache key.
TRAINING = {"batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
            "bn_mode": "train", "loss": "client training loss", "version": 1}


def parse_state(state: str) -> int:
    """The number of training steps of a victim state: 0 for "init", N for "trained:N"."""
    if state == "init":
        return 0
    if isinstance(state, str) and state.startswith("trained:"):
        n = state.split(":", 1)[1]
        if n.isascii() and n.isdigit():
            return int(n)
    raise ValueError(f"victim state {state!r} is neither 'init' nor 'trained:N'")


def cache_dir() -> Path:
    """Where trained victims are cached: $LEAKBENCH_CACHE/victims or ~/.cache/leakbench/victims."""
    return cache_root() / "victims"


def _spec(component: Any, spec: tuple[str, dict[str, Any]] | None) -> dict[str, Any]:
    if spec is not None:
        name, params = spec
    else:
        name = getattr(component, "registry_name", "") or type(component).__name__
        params = getattr(component, "config", {})
    return {"name": name, "params": dict(sorted(params.items()))}


def cache_key(arch: Arch, dataset: Dataset, steps: int, seed: int,
              arch_spec: tuple[str, dict[str, Any]] | None = None,
              dataset_spec: tuple[str, dict[str, Any]] | None = None) -> str:
    """Hash of everything that determines the trained weights."""
    ident = {"arch": _spec(arch, arch_spec), "dataset": _spec(dataset, dataset_spec),
             "steps": steps, "seed": seed, "training": TRAINING}
    source = dataset.source() if hasattr(dataset, "source") else None
    if source is not None:  # files from a folder: the weights follow them (bundled: no key)
        ident["source"] = source
    return settings_key(ident)


def _initial(arch: Arch, meta: DatasetMeta, seed: int) -> nn.Module:
    """The architecture's model for ``meta`` from ``seed``; its ``build_for`` or
    ``init_weights`` raising is an error naming the arch (a plug-in's TypeError had read
    ``setup: TypeError: …`` with no component)."""
    torch.manual_seed(seed)  # torch's own initialisers draw from the global generator
    with _naming(arch, "build"):
        model = arch.build_for(meta)
    model = checked_model(arch, model)
    problem = _logits_problem(arch, meta)  # as at expansion: a rerun skips that
    if problem:
        raise ValueError(f"arch {name_of(arch)}: {problem}")
    with _naming(arch, "init_weights"):
        arch.init_weights(model, torch.Generator().manual_seed(seed))
    return model


_LOGITS_PROBLEMS: dict[str, str | None] = {}


def _logits_problem(arch: Arch, meta: DatasetMeta) -> str | None:
    """:func:`bench.returns.meta_device_probe`'s verdict on the logits, once per arch setting
    and dataset metadata in a process: a ResNet's probe costs some 50 ms, and every cell
    builds its victim here (a trained one twice)."""
    key = repr((type(arch), sorted(getattr(arch, "config", {}).items()), meta))
    if key not in _LOGITS_PROBLEMS:
        _LOGITS_PROBLEMS[key] = meta_device_probe(arch, meta)[1]
    return _LOGITS_PROBLEMS[key]


@contextlib.contextmanager
def _naming(arch: Arch, method: str) -> Iterator[None]:
    try:
        yield
    except (torch.cuda.OutOfMemoryError, MemoryError):  # torch.OutOfMemoryError: 2.5 on
        raise  # the machine's, not the arch's
    except Exception as e:  # noqa: BLE001 - a plug-in's code may raise anything
        raise RuntimeError(f"arch {name_of(arch)}: {method} raised {type(e).__name__}: "
                           f"{e}") from e


def train_steps(model: nn.Module, dataset: Dataset, meta: DatasetMeta, steps: int, seed: int
                ) -> None:
    """``steps`` SGD steps on the training split, mini-batches drawn from ``seed`` (CPU)."""

    data = dataset.load("train")
    n = len(data)
    if n == 0:
        raise ValueError("the dataset's training split is empty")
    gen = torch.Generator().manual_seed(seed ^ 0x7EA1)
    opt = torch.optim.SGD(model.parameters(), lr=TRAINING["lr"], momentum=TRAINING["momentum"],
                          weight_decay=TRAINING["weight_decay"])
    set_bn_mode(model, TRAINING["bn_mode"])
    order = torch.randperm(n, generator=gen)
    pos = 0
    bs = min(TRAINING["batch_size"], n)
    domain = domain_of(meta)
    for step in range(steps):
        if pos + bs > n:
            order, pos = torch.randperm(n, generator=gen), 0
        idx = order[pos:pos + bs]
        pos += bs
        x01, y = stack_items(data, idx, meta)
        x = domain.encode(x01)
        loss = training_loss(model(x), y)
        if not torch.isfinite(loss):
            raise ValueError(f"victim training diverged at step {step + 1} of {steps}")
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)


def victim_model(arch: Arch, dataset: Dataset, meta: DatasetMeta, state: str, seed: int,
                 arch_spec: tuple[str, dict[str, Any]] | None = None,
                 dataset_spec: tuple[str, dict[str, Any]] | None = None,
                 cache: Path | None = None) -> nn.Module:
    """Build the model deterministically from ``seed``; ``state`` is "init" or "trained:N".

    ``arch_spec``/``dataset_spec`` are ``(name, params)`` for the cache key; by default
    they come from the components themselves (their registered name and validated
    parameters). ``cache`` overrides the cache directory.
    """
    steps = parse_state(state)
    model = _initial(arch, meta, seed)
    if steps == 0:
        return model
    key = cache_key(arch, dataset, steps, seed, arch_spec, dataset_spec)

    def build() -> bytes:
        trained = _initial(arch, meta, seed)
        train_steps(trained, dataset, meta, steps, seed)
        return state_bytes(trained)

    model = cached((cache or cache_dir()) / f"{key}.pt", build, lambda p: _load(model, p))
    model.train()
    return model


def _load(model: nn.Module, path: Path) -> nn.Module | None:
    """``model`` with the cached weights loaded; None when unreadable (then retrain)."""
    return model.train() if load_weights(model, path) else None
