"""Preflight: before the first cell runs, every dataset the cells to run use is opened once,
so that missing or damaged data is one line and exit status 2, not a column of error
records. Each dataset is read in the splits its cells read: ``train`` (private batches),
``test`` too for a utility track and for a cell granted ``public_data`` (its public split is
the test split: :mod:`bench.public`)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from typing import Any

from bench.identity import Spec
from bench.paths import expanded
from bench.registry import LeakbenchError
from bench.returns import kind_of


class DataError(LeakbenchError):
    """A dataset the suite uses cannot be read (one line naming the folder and the fix)."""


def cell_splits(cells: Iterable[Any], splits: Iterable[str] = ("train",)
                ) -> dict[Spec, tuple[str, ...]]:
    """Each dataset of ``cells`` with the splits they read: ``splits``, plus ``test`` where a
    cell is granted ``public_data``."""
    from bench.grants import PUBLIC_DATA  # lazily: the grants import torch

    base = tuple(splits)
    out: dict[Spec, tuple[str, ...]] = {}
    for cell in cells:
        wants = base + (("test",) if PUBLIC_DATA in getattr(cell, "granted", ()) else ())
        out[cell.dataset] = tuple(dict.fromkeys(out.get(cell.dataset, ()) + wants))
    return out


def preflight_cells(cells: Iterable[Any], splits: Iterable[str] = ("train",)) -> None:
    """Open every dataset of ``cells`` once, in the splits they read (:func:`cell_splits`);
    raise DataError."""
    cells = list(cells)
    largest: dict[Spec, tuple[int, str]] = {}
    kinds = {(c.dataset, tuple(c.defense), getattr(c, "batch_size", None),  # seeds alike: one
              getattr(c, "config", None)): c for c in cells}  # defense chain built per kind
    for (dataset, *_), cell in kinds.items():
        largest[dataset] = max(largest.get(dataset, (1, "")), _draws(cell))
    for spec, wanted in cell_splits(cells, splits).items():
        batch, why = largest.get(spec, (1, ""))
        preflight_datasets([spec], wanted, batch=batch, why=why)
    from bench.grants import PUBLIC_DATA

    for spec in dict.fromkeys(c.dataset for c in cells
                              if PUBLIC_DATA in getattr(c, "granted", ())):
        _nonempty_public_split(spec)


def _nonempty_public_split(spec: Spec) -> None:
    """A DataError where a dataset's public split (its test split less copies of training
    items, :mod:`bench.public`) is empty: every cell granted it had failed ("the public split
    holds no sentence to count"), exit 0."""
    from bench.public import public_data

    dataset = spec.build()
    if dataset.no_public_split:  # the cell's own check says why
        return
    if len(public_data(dataset).images) == 0:
        raise DataError(f"{spec.label}: its public split is empty (every test item is a copy "
                        "of a training item), and the cells granted public_data read it")


def _draws(cell: Any) -> tuple[int, str]:
    """The distinct training items a cell draws at once, and the setting that says so: an
    attack cell its batch, the images its MixUp mixes in and a secure aggregate's other
    batches; a utility cell its client batch per step, or a step's mixed-in images."""
    from bench.contracts import observed_batch

    links = [d.build() for d in cell.defense]
    chain = "+".join(d.label for d in cell.defense)
    if hasattr(cell, "batch_size"):  # mixed-in images and other clients' batches, distinct
        b = int(cell.batch_size)  # over the cell (a plug-in aggregate: its observed batch)
        n = max(b + sum(d.extra_items(b) for d in links), observed_batch(links, b))
        return n, "batch_size" if n == b else f"batch_size {b}, {n} through the defense {chain}"
    from bench.contracts import Defense

    b = int(dict(getattr(cell, "config", ())).get("batch_size", 1))  # a utility step: each
    # a link with an accountant trains on Poisson batches of mean b: their mixed-in images
    # are sized for 5 standard deviations above it (sized for b, a MixUp + DP-SGD run had
    # failed at its first larger draw, and ranked at chance accuracy)
    poisson = any(type(d).privacy_of_training is not Defense.privacy_of_training for d in links)
    top = b + math.ceil(5 * math.sqrt(b)) if poisson else b
    n = max([b] + [d.extra_items(top) for d in links if d.level != "protocol"])  # draw alone
    sized = f" (Poisson batches up to {top})" if poisson and n > b else ""
    return n, ("utility.batch_size" if n == b
               else f"utility.batch_size {b}, {n} through the defense {chain}{sized}")


def preflight_datasets(specs: Iterable[Spec], splits: Iterable[str] = ("train",),
                       batch: int = 1, why: str = "batch_size") -> None:
    """Open each dataset once, read its first and last item of each split; raise DataError,
    also when the train split holds fewer than ``batch`` items (every such cell failed;
    ``why``: the suite's setting that asks for them)."""
    splits = tuple(splits)
    seen: set[Spec] = set()
    for spec in specs:
        if spec in seen:
            continue
        seen.add(spec)
        params = spec.kwargs
        root = params.get("root")
        if root and not params.get("download") and not expanded(root, DataError).is_dir():
            raise DataError(f"{spec.label}: root {root} is not a folder: fix `root:` in the "
                            f"suite, or create it and put the data there")
        try:
            dataset = spec.build()
            dataset.meta()
            for split in splits:
                data = dataset.load(split)
                if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
                    raise DataError(f"{spec.label}: load({split!r}) returned "
                                    f"{kind_of(data)}, expected a sequence of (item, label) "
                                    "pairs")
                n = len(data)
                if n == 0:
                    raise DataError(f"{spec.label}: the {split} split has no items: check "
                                    f"its files")
                if split == "train" and n < batch:
                    raise DataError(f"{spec.label}: the train split has {n} items, fewer than "
                                    f"the {batch} a cell draws at once ({why}): lower it or "
                                    "give the dataset more items")
                for i in sorted({0, n - 1}):
                    data[i]
        except LeakbenchError as e:
            raise DataError(str(e)) from None
        except Exception as e:  # noqa: BLE001 - a loader's failure, whatever it is
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            where = f" under {root}" if root else ""
            fix = "replace the damaged files or fix `root:`" if "root" in params else \
                "check its load()"  # a dataset without files to fix
            raise DataError(f"{spec.label}: its files{where} could not be read "
                            f"({type(e).__name__}: {first}): {fix}") from None


def scored_with_lpips(cell: Any) -> bool:
    """Whether ``cell`` is one LPIPS scores (an image attack cell): the cells for which a run
    and its dry run check the weights :func:`preflight_perceptual` names."""
    from bench.cells.base import cell_modality

    return getattr(cell, "attack", None) is not None and cell_modality(cell) == "image"


def preflight_perceptual(settings: dict[str, Any]) -> None:
    """The LPIPS weights file a suite names exists and loads, when LPIPS is on: without it
    every record said LPIPS n/a, with a note that read as "put the file here"."""
    if not settings.get("lpips", True):
        return
    from bench.perceptual import LPIPS_ENV, lpips_check

    weights, source = settings.get("lpips_weights"), "perceptual.lpips_weights"
    if not weights:  # the variable's file is read in every cell: a missing or broken one
        weights, source = os.environ.get(LPIPS_ENV, "").strip(), f"${LPIPS_ENV}"  # gave
        if not weights:  # each record LPIPS n/a ('~nosuchuser' an error), the run exit 0
            return
    if not expanded(weights).is_file():
        raise LeakbenchError(f"{source}: no weights file at {weights}")
    problem = lpips_check(settings.get("lpips_net", "alex"), weights)
    if problem:
        raise LeakbenchError(f"{source}: {problem}")
