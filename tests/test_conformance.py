"""Conformance of every registered component, in the style of timm's tests over
``list_models()``: the tests are parametrized over the registries, so a newly registered
attack, defense, architecture or dataset is checked with no test edited.

Attacks run on a tiny cell (12×12 digits) with a tiny budget; those that skip it (R-GAP and
the analytic attack need particular layers) run on the first cell of their lookup that they
accept, and a registered attack that accepts none of them fails. Text-only attacks run on a
tiny text cell (6-token pydoc sentences, a width-32 transformer). Components are checked on
the data their ``modalities`` declare.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from bench.cells.attack import AttackCell as Cell
from bench.contracts import UPDATE_KINDS
from bench.grants import CAPABILITIES, GRANTS
from bench.registry import ARCHS, ATTACKS, DATASETS, DEFENSES
from bench.suite import attack_cells
from helpers import make_suite, observe_tiny

TINY_DATASET = {"digits": {"size": 12}}  # 12: ConvNet's two 3×3 pools need 9×9
TINY_TEXT = {"pydoc": {"task": "classify", "seq_len": 6}}
TEXT_ARCHS: list[Any] = [{"transformer": {"width": 32}}]
MAX_GRAD_EVALS = 7  # small enough to bind every optimisation attack, big enough to iterate
FALLBACK_ARCHS: list[Any] = [{"mlp": {"hidden": 16}}, {"lenet": {"width": 4}},
                             {"convnet": {"width": 4}}]
SUITABLE_ARCHS: dict[str, list[Any]] = {  # first choices, tried before the fallbacks
    "rgap": [{"fcn3": {"hidden1": 32, "hidden2": 8}}],
    "gradinversion": [{"convnet": {"width": 4}}],
}
TINY_PARAMS: dict[str, dict[str, Any]] = {  # attacks whose defaults build something big
    "dmcmc": {"score_steps": 3, "score_width": 8},  # its score model: 3 steps, not 2 000
}


def tiny_cell(attack: str = "ig", defense: str = "none", mode: str = "fedsgd") -> Cell:
    """The first tiny cell (arch × batch 2 or 1) the attack and the defense accept."""
    reasons = []
    text = "image" not in ATTACKS.get(attack).cls.modalities
    dataset = TINY_TEXT if text else TINY_DATASET
    for arch in (TEXT_ARCHS if text else SUITABLE_ARCHS.get(attack, []) + FALLBACK_ARCHS):
        for batch in (2, 1):
            suite = make_suite(datasets=[dataset], archs=[arch], batch_size=batch,
                               attacks=[{attack: TINY_PARAMS.get(attack, {})}],
                               defenses=[defense], grant=list(CAPABILITIES),
                               client={"mode": mode}, budget={"max_grad_evals": MAX_GRAD_EVALS})
            try:
                (cell,) = attack_cells(suite)
            except ValueError as e:  # e.g. an input too small for the arch
                reasons.append(f"{arch}, batch {batch}: {e}")
                continue
            if cell.skip_reason is None:
                return cell
            reasons.append(f"{arch}, batch {batch}: {cell.skip_reason}")
    pytest.fail(f"no tiny cell accepts attack {attack!r} with defense {defense!r} in {mode}; "
                "add one to SUITABLE_ARCHS:\n" + "\n".join(reasons))


# -- attacks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_declares_known_grants_and_update_kinds(name):
    cls = ATTACKS.get(name).cls
    assert set(cls.needs) | set(cls.wants) <= set(GRANTS), name
    assert cls.update_kinds and set(cls.update_kinds) <= set(UPDATE_KINDS.values()), name


@pytest.mark.parametrize("name", ATTACKS.names())
def test_attack_shape_budget_and_determinism(name, tmp_path, monkeypatch):
    """``data`` is batch × input shape, grad_evals stays within ``max_grad_evals`` (the loops
    cut their last step to the cap: L-BFGS's inner iterations, Adam's iterations per
    restart), and the same observation with the same seed gives the same output."""
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))  # a score model's cache, say
    cell = tiny_cell(name)
    runs = []
    for _ in range(2):
        obs, _ = observe_tiny(cell)  # a fresh observation: attacks may move BN buffers
        runs.append(ATTACKS.get(name).cls(**cell.attack.kwargs).reconstruct(obs))
    first, second = runs
    assert tuple(first.data.shape) == (cell.batch_size, *obs.input_shape)
    assert first.grad_evals <= MAX_GRAD_EVALS
    assert torch.equal(first.data, second.data)
    assert (first.labels is None and second.labels is None) or \
        torch.equal(first.labels, second.labels)
    assert (first.iterations, first.grad_evals) == (second.iterations, second.grad_evals)


# -- defenses ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", sorted(UPDATE_KINDS))
@pytest.mark.parametrize("name", DEFENSES.names())
def test_defense_keeps_the_update_structure(name, mode):
    """Same number of tensors, same shapes, same kind as the undefended update; finite."""
    cell = tiny_cell(defense=name, mode=mode)
    (plain,) = attack_cells(make_suite(**_axes(cell), defenses=["none"]))
    _, undefended = observe_tiny(plain)
    _, defended = observe_tiny(cell)
    before, after = undefended.update, defended.update
    assert after.kind == before.kind == UPDATE_KINDS[mode]
    assert [t.shape for t in after.tensors] == [t.shape for t in before.tensors]
    assert all(bool(torch.isfinite(t).all()) for t in after.tensors)


def _axes(cell: Cell) -> dict[str, Any]:
    return {"datasets": [TINY_DATASET], "archs": [{cell.arch.name: cell.arch.kwargs}],
            "batch_size": cell.batch_size, "client": {"mode": cell.client_spec.mode},
            "attacks": ["ig"]}


# -- architectures and datasets ---------------------------------------------------------------

BUNDLED = [("digits", {}), ("digits", {"size": 16}), ("photos", {}), ("photos", {"size": 16})]
BUNDLED_TEXT = [("pydoc", {"task": "classify"}), ("pydoc", {"task": "lm", "seq_len": 8})]


def _compatible(bundled: list[tuple[str, dict]]) -> list[tuple[str, str, dict]]:
    """(arch, dataset, kwargs) for every arch and bundled dataset of a modality it takes."""
    return [(arch, d, kw) for arch in ARCHS.names() for d, kw in bundled
            if DATASETS.get(d).cls.modality in ARCHS.get(arch).cls.modalities]


@pytest.mark.parametrize("arch,dataset,kwargs", _compatible(BUNDLED + BUNDLED_TEXT),
                         ids=lambda v: str(v))
def test_arch_builds_for_every_bundled_dataset_shape(arch, dataset, kwargs):
    """A forward pass gives (B, num_classes), or (B, 1) for a single-logit head (trained
    with the logistic loss on the label's parity, see bench.client.training_loss); a
    language model's is per position (B, L, vocabulary)."""
    meta = DATASETS.get(dataset).cls(**kwargs).meta()
    model = ARCHS.get(arch).cls().build_for(meta)
    text = meta.modality == "text"
    x = torch.randint(0, len(meta.vocab), (2, *meta.shape)) if text else \
        torch.rand(2, *meta.shape)
    with torch.no_grad():
        out = model.eval()(x)
    allowed = ((2, *meta.shape, meta.num_classes),) if meta.task == "lm" else \
        ((2, meta.num_classes), (2, 1))
    assert tuple(out.shape) in allowed


@pytest.mark.parametrize("name", ARCHS.names())
def test_every_arch_takes_some_bundled_dataset(name):
    assert any(a == name for a, _, _ in _compatible(BUNDLED + BUNDLED_TEXT))


def _reads_local_files(name: str) -> bool:
    return any(p.name == "root" for p in DATASETS.get(name).params)


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_yields_images_in_the_unit_box_of_its_shape(name):
    if _reads_local_files(name):
        pytest.skip(f"{name} reads local files (tests/test_datasets_real.py covers it)")
    ds = DATASETS.get(name).cls()
    meta = ds.meta()
    if meta.modality == "text":
        _check_token_sequences(ds, meta)
        return
    assert len(meta.mean) == len(meta.std) == meta.shape[0]
    assert all(s > 0 and math.isfinite(s) for s in meta.std)
    for split in ("train", "test"):
        data = ds.load(split)
        assert len(data) > 0
        for i in range(0, len(data), max(1, len(data) // 16)):
            x, y = data[i]
            assert x.dtype == torch.float32 and tuple(x.shape) == meta.shape
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
            assert 0 <= int(y) < meta.num_classes


def _check_token_sequences(ds: Any, meta: Any) -> None:
    """A text dataset: token ids of the vocabulary, ``shape`` long, labels in range."""
    assert meta.vocab and len(meta.shape) == 1
    for split in ("train", "test"):
        x, y = ds.load(split).tensors
        assert len(x) > 0 and x.dtype == torch.long and tuple(x.shape[1:]) == meta.shape
        assert int(x.min()) >= 0 and int(x.max()) < len(meta.vocab)
        assert int(y.min()) >= 0 and int(y.max()) < meta.num_classes
