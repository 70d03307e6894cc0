"""Files the store writes get the mode a plain write would give them, not the temporary
file's owner-only 0600 (records, pictures and tables unreadable to another user or a web
server)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from bench import store
from bench.contracts import Attack, Defense, Reconstruction


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    store._umask.cache_clear()
    yield
    os.umask(old)
    store._umask.cache_clear()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file modes")
def test_a_new_file_gets_the_umasks_mode_and_an_old_one_keeps_its_own(tmp_path, umask_027):
    new = tmp_path / "records" / "a.json"
    store.write_atomic(new, "{}")
    assert mode(new) == 0o640  # 0666 less the umask 027
    old = tmp_path / "leaderboard.md"
    old.write_text("x")
    old.chmod(0o604)
    store.write_atomic(old, "y")
    assert old.read_text() == "y" and mode(old) == 0o604


def test_jsonable_writes_numpy_and_tensors_and_unwritable_names_the_rest():
    import math

    import numpy as np
    import torch

    from bench.json_values import dumps, jsonable, unwritable

    info = jsonable({"a": np.float32(0.5), "b": np.arange(3), "c": torch.tensor([1.0]),
                     "d": {"e": [np.int64(2), math.inf]}})
    assert info == {"a": 0.5, "b": [0, 1, 2], "c": [1.0], "d": {"e": [2, None]}}
    assert jsonable({"per_restart": {0: 1.0, np.int64(1): 2.0}}) == {
        "per_restart": {"0": 1.0, "1": 2.0}}  # as json.dumps writes int keys
    assert unwritable(info) is None and dumps(info)
    assert unwritable({"x": [1, {"y": object()}]}) == (
        "record.x[1].y is of type object, which JSON cannot hold")
    assert unwritable({"x": math.nan}, "info") == (
        "info.x is not a finite number (NaN or infinity)")
    assert unwritable({1: 2}) == "record has the key 1, not a string"


class NumpyTrace(Attack):
    """A plug-in attack whose loss trace holds numpy and tensor scalars, one of them NaN."""

    def reconstruct(self, obs):
        import numpy as np

        return Reconstruction(torch.zeros(obs.batch_size, *obs.input_shape),
                              loss_trace=[np.float32(1.5), np.float64("nan"), torch.tensor(0.5)])


class NumpyEpsilon(Defense):
    """A plug-in defense whose training guarantee reports a numpy ε."""

    def transform_update(self, update, ctx):
        return update

    def privacy_of_training(self, sample_rate, steps):
        import numpy as np

        return {"epsilon": np.float32(3.0), "delta": np.float64(1e-5), "steps": np.int64(steps)}


def test_numpy_values_in_a_loss_trace_or_a_training_guarantee_are_written(tmp_path):
    """Both are a plug-in's numbers: they used to make the cell an error record."""
    from bench.registry import REGISTRIES, register_attack, register_defense
    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import make_suite

    register_attack("numpy_trace")(NumpyTrace)
    register_defense("numpy_epsilon")(NumpyEpsilon)
    try:
        suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 8}}],
                           defenses=["numpy_epsilon"], attacks=["numpy_trace"],
                           utility={"steps": 2, "batch_size": 8, "lr": 0.1, "eval_size": 20})
        run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    finally:
        REGISTRIES["attacks"].unregister("numpy_trace")
        REGISTRIES["defenses"].unregister("numpy_epsilon")
    by_kind = {r.get("kind", "attack"): r for r in load_records(tmp_path)}
    attack, utility = by_kind["attack"], by_kind["utility"]
    assert attack["status"] == "ok", attack["error"]
    assert attack["loss_trace"] == [1.5, None, 0.5]
    assert utility["status"] == "ok", utility["error"]
    privacy = utility["metrics"]["privacy"]  # with how the run drew its Poisson batches
    assert {k: privacy[k] for k in ("epsilon", "delta", "steps")} == {
        "epsilon": 3.0, "delta": 1e-5, "steps": 2}
    assert privacy["dp_sampling"] == "poisson"
