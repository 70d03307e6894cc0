"""Which figure each scenario gets (the drawing itself is :mod:`bench.plots`)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.leaderboard.aggregate import scenario_summaries, strongest_attacks, utility_summary
from bench.leaderboard.frames import scenario_slug, scenario_title


def write_plots(df: pd.DataFrame, util: pd.DataFrame, out_dir: Path) -> dict[tuple, str]:
    """Per scenario: privacy–utility scatter with its Pareto front where the utility track ran,
    else PSNR against defense strength. Returns scenario → path relative to ``out_dir``."""
    from bench.plots import plot_privacy_utility, plot_psnr_vs_strength

    paths: dict[tuple, str] = {}
    for key, g, summary in scenario_summaries(df):
        best = strongest_attacks(summary)
        title = scenario_title(key)
        us = utility_summary(util, key[0], key[1]) if len(util) else None
        if us is not None and not us.empty:
            frame = best.merge(us, on="defense")
            frame = frame[frame["psnr"].notna() & frame["accuracy"].notna()]
            if frame.empty:
                continue
            rel = f"plots/privacy_utility_{scenario_slug(key)}.png"
            plot_privacy_utility(frame.rename(columns={"defense": "defense_label"})
                                 [["defense_label", "psnr", "accuracy"]], out_dir / rel, title)
        else:
            strength = g[["defense", "line", "strength"]].drop_duplicates("defense")
            frame = best.merge(strength, on="defense")
            frame = frame[frame["strength"].notna() & frame["psnr"].notna()]
            if frame.empty or frame.groupby("line").size().max() < 2:
                continue
            rel = f"plots/psnr_vs_strength_{scenario_slug(key)}.png"
            plot_psnr_vs_strength(frame.rename(columns={"defense": "defense_label",
                                                        "line": "defense"})
                                  [["defense", "strength", "psnr"]], out_dir / rel, title)
        paths[key] = rel
    return paths
