"""Suites: a YAML file (or a built-in name) of axes, validated once and expanded into cells.

- :mod:`bench.suite.read`: a file or built-in name → a parsed document, within the limits of
  :mod:`bench.suite.limits` (nothing heavy imported: the CLI reads a file before torch);
- :mod:`bench.suite.schema`: the top-level keys, the settings' parameters, :class:`Suite`;
- :mod:`bench.suite.load`: YAML → validated :class:`Suite`;
- :mod:`bench.suite.expand`: the cartesian product → cells;
- :mod:`bench.suite.match`: ``exclude`` rules and compatibility, for every cell kind.

The names below are imported on first use, so that ``bench.suite.read`` can be imported
without the registries, the cells and torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.suite.expand import (
        all_cells,
        attack_cells,
        count_cells,
        iter_cells,
        utility_cells,
    )
    from bench.suite.load import load_suite, parse_suite
    from bench.suite.read import builtin_suites
    from bench.suite.schema import Suite, SuiteError

_WHERE = {"all_cells": "expand", "attack_cells": "expand", "count_cells": "expand",
          "iter_cells": "expand", "utility_cells": "expand", "load_suite": "load",
          "parse_suite": "load", "builtin_suites": "read", "Suite": "schema",
          "SuiteError": "schema"}

__all__ = ["Suite", "SuiteError", "all_cells", "attack_cells", "builtin_suites", "count_cells",
           "iter_cells", "load_suite", "parse_suite", "utility_cells"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
