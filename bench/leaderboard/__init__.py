"""Leaderboards: pure functions of the records, rendered with pandas and tabulate.

Nothing here reads a clock or the machine: the same records give byte-identical
markdown, LaTeX and CSV (stable sort orders, fixed decimals, environment taken from
the records' provenance).

- :mod:`~bench.leaderboard.frames`: records → pandas frames, scenario groups and titles;
- :mod:`~bench.leaderboard.uncertainty`: 95% t-intervals, shared ranks, the failure floor;
- :mod:`~bench.leaderboard.aggregate`: summaries over seeds, strongest attacks, ranks,
  utility pairs;
- :mod:`~bench.leaderboard.tables`: the attack, defense and architecture tables;
- :mod:`~bench.leaderboard.figures`: which figure each scenario gets;
- :mod:`~bench.leaderboard.render`: markdown/LaTeX documents and ``write_leaderboard``;
- :mod:`~bench.leaderboard.export`: the CSV exports (per cell, and aggregated per row);
- :mod:`~bench.leaderboard.pivot`: ``leakbench table``, one metric over two axes for a paper.
"""

from bench.leaderboard.aggregate import (
    HEADLINE,
    defense_order,
    headline,
    interval,
    rank_attacks,
    rank_defenses,
    strongest_attacks,
    summarize_attacks,
    utility_summary,
)
from bench.leaderboard.export import (
    aggregate_columns,
    aggregate_frame,
    export,
    export_columns,
)
from bench.leaderboard.figures import write_plots
from bench.leaderboard.frames import (
    FAILED,
    SCENARIO,
    defense_strength,
    metric_columns,
    records_frame,
    scenario_slug,
    scenario_title,
    scenarios,
    utility_frame,
)
from bench.leaderboard.render import (
    environment_lines,
    leaderboard_tables,
    protocol_lines,
    render,
    tex,
    write_leaderboard,
)
from bench.leaderboard.tables import (
    Table,
    architecture_table,
    attack_metrics,
    attack_tables,
    defense_metrics,
    defense_tables,
)
from bench.leaderboard.uncertainty import (
    LEVEL,
    Interval,
    format_rank,
    seed_values,
    shared_ranks,
    t_interval,
)

__all__ = [
    "FAILED", "HEADLINE", "LEVEL", "SCENARIO", "Interval", "Table", "aggregate_columns",
    "aggregate_frame", "architecture_table", "export_columns", "format_rank", "interval",
    "rank_attacks", "rank_defenses", "seed_values", "shared_ranks", "t_interval",
    "attack_metrics", "attack_tables", "defense_metrics", "defense_order", "defense_strength",
    "defense_tables", "environment_lines", "export", "headline", "metric_columns",
    "protocol_lines", "records_frame", "render", "scenario_slug", "scenario_title", "scenarios",
    "strongest_attacks", "summarize_attacks", "tex", "utility_frame", "utility_summary",
    "write_leaderboard", "write_plots", "leaderboard_tables",
]
