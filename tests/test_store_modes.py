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
