"""Figures for the report: the privacy–utility trade-off and leakage against defense strength.

Rendering is deterministic: matplotlib's object API with the Agg canvas (no pyplot, no global
backend switch), matplotlib's default style whatever the user's matplotlibrc says, a fixed size
and dpi, and PNG metadata without the "Software" version stamp. Regenerating a figure from the
same data gives the same bytes, so committed pictures only change when their numbers do.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from matplotlib import style
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bench.metrics import get_metric
from bench.store import write_atomic

FIGSIZE = (7.0, 5.0)  # inches
DPI = 100  # → 700×500 px
METADATA = {"Software": None}  # no matplotlib version stamp in the PNG
ACCURACY_DIGITS = 3  # the decimals of test accuracy in the defense tables


def pareto_front(df: pd.DataFrame, digits: tuple[int, int] | None = None,
                 privacy: str = "psnr") -> list[str]:
    """The defense labels on the privacy–utility Pareto front, by increasing accuracy.

    Both high accuracy and a low attack score (column ``privacy``: PSNR, or ROUGE-1 for text)
    are good. A defense is on the front when no other one has accuracy ≥ and score ≤ with at
    least one of them strict, compared as the tables print them (rounded to ``digits``:
    accuracy's, the score's; by default the tables' decimals), so two defenses that read level
    are level. Rows whose accuracy or score is missing (NaN) are never on the front; identical
    points are all kept.
    """
    if digits is None:
        digits = (ACCURACY_DIGITS, get_metric(privacy).digits)
    rows = df[["defense_label", "accuracy", privacy]].dropna(subset=["accuracy", privacy])
    points = [(str(label), round(float(acc), digits[0]), round(float(score), digits[1]))
              for label, acc, score in rows.itertuples(index=False)]
    front = []
    for label, acc, score in points:
        dominated = any(a >= acc and p <= score and (a > acc or p < score)
                        for _, a, p in points)
        if not dominated:
            front.append((acc, score, label))
    return [label for _, _, label in sorted(front)]


def plain(text: object) -> str:
    """A label as plain text: a "$" would start matplotlib's mathtext (a label is free text,
    an imagefolder's folder: "p$x^{$q" failed the whole leaderboard)."""
    return str(text).replace("$", "\\$")


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(plain(title))
    ax.grid(True, linewidth=0.5, alpha=0.5)
    return fig, ax


def _save(fig: Figure, path: Path) -> Path:
    """The figure as a PNG at ``path``, atomically: a run killed while its leaderboard was
    drawn had left a truncated plot."""
    path = Path(path)
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=DPI, metadata=METADATA)
    write_atomic(path, image.getvalue())
    return path


def plot_privacy_utility(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Scatter test accuracy (x) against the best attack's mean PSNR (y), one point per defense.

    ``df`` has columns ``defense_label``, ``psnr`` (dB) and ``accuracy`` (in [0,1]). Points are
    labelled; the Pareto front (high accuracy, low PSNR: bottom right is best) is marked and
    joined. Rows with a missing value are left out.
    """
    with style.context("default"):
        fig, ax = _figure(title)
        rows = df.dropna(subset=["accuracy", "psnr"]).sort_values(
            ["accuracy", "psnr", "defense_label"])
        front = set(pareto_front(rows))
        on = rows[rows["defense_label"].astype(str).isin(front)]
        off = rows[~rows["defense_label"].astype(str).isin(front)]
        ax.scatter(off["accuracy"], off["psnr"], s=36, color="0.55", label="dominated", zorder=2)
        ax.plot(on["accuracy"], on["psnr"], "-o", color="tab:red", markersize=7,
                label="Pareto front", zorder=3)
        for r in rows.itertuples(index=False):
            ax.annotate(plain(r.defense_label), (float(r.accuracy), float(r.psnr)),
                        textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xlabel("test accuracy (higher is better utility)")
        ax.set_ylabel("best attack PSNR, dB (lower is better privacy)")
        if len(rows):
            ax.legend(loc="best", fontsize=8)
        return _save(fig, path)


def _log_span(values: list[float]) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) >= 2 and math.log10(max(positive) / min(positive)) > 2


def plot_psnr_vs_strength(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Best attack PSNR against defense strength, one line per defense.

    ``df`` has columns ``defense`` (the line: its label without the main parameter, as
    ``noise(distribution=laplace)``), ``strength`` (the defense's main parameter) and
    ``psnr`` (dB). The x axis is logarithmic when the positive strengths span more than two
    decades (symmetric-log, linear around 0, when a strength of 0 is present).
    """
    with style.context("default"):
        fig, ax = _figure(title)
        rows = df.dropna(subset=["strength", "psnr"])
        for name, group in sorted(rows.groupby("defense"), key=lambda kv: str(kv[0])):
            group = group.sort_values("strength")
            ax.plot(group["strength"], group["psnr"], "-o", markersize=5, label=plain(name))
        strengths = [float(v) for v in rows["strength"]]
        if _log_span(strengths):
            if min(strengths) <= 0:
                ax.set_xscale("symlog", linthresh=min(v for v in strengths if v > 0))
            else:
                ax.set_xscale("log")
        ax.set_xlabel("defense strength (its main parameter)")
        ax.set_ylabel("best attack PSNR, dB (lower is better privacy)")
        if len(rows):
            ax.legend(loc="best", fontsize=8)
        return _save(fig, path)


def plot_quality_curves(df: pd.DataFrame, path: Path, title: str) -> Path:
    """Each attack's mean PSNR against evaluations (left, log) and seconds (right, log).

    ``df`` has columns ``attack``, ``point``, ``grad_evals``, ``seconds`` and ``psnr``."""
    with style.context("default"):
        fig = Figure(figsize=(FIGSIZE[0] * 1.6, FIGSIZE[1]), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2, sharey=True)
        fig.suptitle(plain(title))
        for ax, x, label in ((axes[0], "grad_evals", "gradient evaluations per cell"),
                             (axes[1], "seconds", "seconds per cell")):
            for name, group in sorted(df.groupby("attack"), key=lambda kv: str(kv[0])):
                group = group.sort_values("point")
                ax.plot(group[x].clip(lower=1e-3), group["psnr"], "-o", markersize=4,
                        label=plain(name))
            ax.set_xscale("log")
            ax.set_xlabel(label)
            ax.grid(True, linewidth=0.5, alpha=0.5)
        axes[0].set_ylabel("mean PSNR, dB")
        axes[1].legend(loc="best", fontsize=8)
        return _save(fig, path)
