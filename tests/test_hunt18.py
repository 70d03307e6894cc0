"""Defects found in session 62's hunts, each with a test that fails on the code before it."""

from __future__ import annotations

import pytest
import torch

from bench.leaderboard import utility_frame  # noqa: F401  (imports the leaderboard package)
from bench.store import load_records
from helpers import make_suite


@pytest.mark.parametrize("factor", [1e30, 1e-30, -1e25])
def test_update_cosine_survives_float32_norm_overflow_and_underflow(tmp_path, factor):
    """A defense that scales the update by 1e30 keeps its direction, yet the recorded cosine
    was 0.0: float32's norm overflowed to inf (1e-30: it underflowed to 0)."""
    from bench.contracts import Defense
    from bench.registry import DEFENSES, register_defense
    from bench.runner import run_suite

    @register_defense("rescale")
    class Rescale(Defense):
        """Multiplies the update by a constant (direction kept)."""

        def transform_update(self, update, ctx):
            out = update.clone()
            out.tensors = [t * factor for t in update.tensors]
            return out

    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=["rescale"], attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 1, "batch_size": 8, "lr": 0.01, "eval_size": 20})
    try:
        run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    finally:
        DEFENSES.unregister("rescale")
    (record,) = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    assert record["metrics"]["update_cosine"] == pytest.approx(1.0 if factor > 0 else -1.0,
                                                               abs=1e-6)


def test_update_cosine_keeps_float32_values_where_the_norms_are_finite():
    """The guard does not move ordinary cosines (committed records stay comparable)."""
    from bench.cells.utility import update_cosine

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, generator=gen), torch.randn(5000, generator=gen)
    b += a
    expected = float(torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-12))
    assert update_cosine(a, b) == expected
    a[7] = float("nan")
    assert update_cosine(a, b) is None


@pytest.mark.parametrize("defense, reason", [
    ({"topk": {"fraction": 0.0}}, "the first layer's gradient is all zero"),
    ({"noise": {"scale": 1e39}}, "no span to check tokens against in a non-finite update"),
])
def test_dager_given_nothing_diverges_and_says_why(tmp_path, defense, reason):
    """DAGER on an all-zero update was recorded `ok` (ROUGE-1 0, an empty span judged as a
    batch), and on an update that overflowed float32 an `error` from a failed SVD, where the
    other closed forms (analytic, R-GAP) diverge and say why."""
    from bench.runner import run_suite

    suite = make_suite(datasets=[{"pydoc": {"task": "classify", "seq_len": 6,
                                            "vocab_size": 200, "classes": 4}}],
                       archs=[{"transformer": {"width": 32, "layers": 1, "heads": 2}}],
                       defenses=[defense], attacks=["dager"], seeds=1)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    (record,) = load_records(tmp_path)
    assert record["status"] == "diverged"
    assert record["error"].startswith(reason)
