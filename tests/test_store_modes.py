"""Files the store writes get the mode a plain write would give them, not the temporary
file's owner-only 0600 (records, pictures and tables unreadable to another user or a web
server)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bench import store


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

    from bench.store import dumps, jsonable, unwritable

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
