"""Suites: a YAML file (or a built-in name) of axes, validated once and expanded into cells.

- :mod:`bench.suite.schema`: the top-level keys, the settings' parameters, :class:`Suite`;
- :mod:`bench.suite.load`: YAML → validated :class:`Suite`;
- :mod:`bench.suite.expand`: the cartesian product → cells;
- :mod:`bench.suite.match`: ``exclude`` rules and compatibility, for every cell kind.
"""

from bench.suite.expand import all_cells, attack_cells, count_cells, iter_cells, utility_cells
from bench.suite.load import builtin_suites, load_suite, parse_suite
from bench.suite.schema import Suite, SuiteError

__all__ = ["Suite", "SuiteError", "all_cells", "attack_cells", "builtin_suites", "count_cells",
           "iter_cells", "load_suite", "parse_suite", "utility_cells"]
