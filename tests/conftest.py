"""Fixtures: a plugin package that adds components through entry points."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from helpers import PLUGIN


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory) -> Path:
    """A folder holding a module and its dist-info with leakbench entry points."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "leakbench_testplugin.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "leakbench_testplugin-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: leakbench-testplugin\n"
                                   "Version: 0.0.1\n")
    (info / "entry_points.txt").write_text(
        "[leakbench.attacks]\nboom = leakbench_testplugin\n\n"
        "[leakbench.defenses]\nflip = leakbench_testplugin:Flip\n")
    return root


