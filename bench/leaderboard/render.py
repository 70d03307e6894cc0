"""The leaderboard as one markdown or LaTeX document: header, protocol and environment lines,
then the tables; ``write_leaderboard`` renders the records of a results folder into it."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from tabulate import tabulate

from bench.latex import BREAKS, label_slug, shrink_to_line, tex
from bench.leaderboard.aggregate import shared_summaries
from bench.leaderboard.curves import curve_tables
from bench.leaderboard.figures import write_plots
from bench.leaderboard.frames import (
    NoAttackRecords,
    label_splits,
    no_attack_records,
    records_frame,
    unregistered_metrics,
    utility_frame,
)
from bench.leaderboard.tables import Table, architecture_table, attack_tables, defense_tables
from bench.leaderboard.text_tables import Tokens, protocol_text, rule_metric_words, text_tables
from bench.leaderboard.uncertainty import never_attacked_count
from bench.markdown import pipe_table
from bench.registry import LeakbenchError, warn
from bench.store import load_records, write_atomic


def environment_lines(df: pd.DataFrame, util: pd.DataFrame | None = None) -> list[str]:
    """leakbench, torch and devices of the records, the utility track's with the attack
    cells' (from their provenance, not this machine; the utility runs' had been left out)."""
    frames = [f for f in (df, util) if f is not None]

    def uniq(col: str) -> str:
        vals = sorted({str(v) for f in frames if col in f for v in f[col].dropna()})
        return ", ".join(vals) if vals else "n/a"

    return [
        f"- leakbench: {uniq('leakbench')} (commit {uniq('git_commit')})",
        f"- torch: {uniq('torch')}",
        f"- devices: {uniq('device_name')} ({uniq('device')})",
    ]


def protocol_lines(df: pd.DataFrame, util: pd.DataFrame | None = None) -> list[str]:
    """The cell counts (the utility track's beside the attack cells', where it ran), then
    the protocol of each modality the records hold."""
    def counted(frame: pd.DataFrame) -> str:
        statuses = frame["status"].value_counts().sort_index()
        return f"{len(frame)} ({', '.join(f'{n} {s}' for s, n in statuses.items())})"

    images, text = split_modalities(df)
    lines = [f"Cells: {counted(df)}." if util is None or util.empty else
             f"Cells: {counted(df)} attack cells and {counted(util)} utility runs."]
    unattacked = never_attacked_count(df)
    if unattacked:  # the protocols' floors and shares do not apply to them
        lines[0] += (f" {unattacked} of them failed before their attack ran (setup, or a "
                     "task no worker began): they measured nothing and count in no mean or "
                     "success rate, only under Failed.")
    if not images.empty:
        lines += ["", *image_protocol(images)]
    if not text.empty:
        lines += ["", *protocol_text(text)]
    return lines


def split_modalities(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(image rows, text rows) of a records frame."""
    text = df["modality"] == "text" if "modality" in df else pd.Series(False, index=df.index)
    return df[~text], df[text]


def success_words(df: pd.DataFrame) -> str:
    """The image cells' success rules in words: "PSNR reaches 20 dB", "SSIM reaches 0.5",
    "MSE is at most 0.01" (joined by "or" where the records hold several)."""
    threshold = sorted({float(v) for v in df["success_psnr"].dropna()})
    parts = [f"PSNR reaches {', '.join(f'{t:g}' for t in threshold)} dB"] if threshold else []
    rules = df["success_rule"] if "success_rule" in df else []
    others = set()
    for r in rules:
        if not isinstance(r, dict) or r.get("metric") in (None, "psnr"):
            continue
        label, unit = rule_metric_words(r["metric"])
        unit = f" {unit}" if unit else ""
        if r.get("at_least") is not None:
            others.add(f"{label} reaches {r['at_least']:g}{unit}")
        elif r.get("at_most") is not None:
            others.add(f"{label} is at most {r['at_most']:g}{unit}")
    return " or ".join(parts + sorted(others)) or "PSNR reaches n/a dB"


def image_protocol(df: pd.DataFrame) -> list[str]:
    return [
        "Protocol: each cell draws a private batch and a victim model from its seed; the client "
        "computes its update, the defense transforms it, and the attack sees only the "
        "observation its threat model grants (model, defended update, batch size). "
        "Reconstructions and originals are de-normalised to [0,1], matched one-to-one "
        "(Hungarian, on MSE) and scored per image: PSNR (data range 1, capped at 100 dB), "
        "Gaussian-window SSIM (torchmetrics). Metrics are means over every seed run, ± the "
        "half-width of their 95% Student-t interval (label accuracy, a share: [its 95% "
        "Wilson interval]); a diverged, failed or timed-out seed "
        "counts at its floor, the score of a uniform mid-grey guess (0.5 in every pixel). "
        f"A run succeeds when its mean {success_words(df)}; diverged and "
        "failed runs count as unsuccessful. Ranks are shared (a–b) where intervals overlap. "
        "Time is the attack alone (median over finished seeds); cells that shared a batched "
        "pass get a share of it, by their trials' clocks or, where a record's "
        "trial_batch.time_share says equal, in equal parts (the pass's cells then read alike).",
    ]


def leaderboard_tables(df: pd.DataFrame, util: pd.DataFrame | None = None,
                       plots: dict[tuple, str] | None = None, archs: Table | None = None,
                       curves: list[Table] | None = None) -> list[Table]:
    """Every table of a leaderboard in its order: image attacks and defenses, text tables,
    architectures, curves (the markdown and LaTeX documents and the static site show this list)."""
    images, text = split_modalities(df)
    tables = []
    if not images.empty:
        tables += attack_tables(images) + defense_tables(images, util, plots)
    tables += text_tables(text, util) if not text.empty else []
    return tables + ([archs] if archs else []) + (curves or [])


def render(df: pd.DataFrame, fmt: str = "markdown", title: str = "",
           util: pd.DataFrame | None = None, plots: dict[tuple, str] | None = None,
           archs: Table | None = None, curves: list[Table] | None = None,
           command: str = "leakbench leaderboard") -> str:
    """The whole leaderboard as one markdown or LaTeX document (``command``: what wrote it,
    for the markdown's header and its generated-by line)."""
    if df.empty:
        raise LeakbenchError("no attack records to build a leaderboard from")
    suites = ", ".join(sorted(df["suite"].unique()))
    tables = leaderboard_tables(df, util, plots, archs, curves)
    if fmt == "markdown":
        out = [f"# {command}: {title or suites}", ""]
        out += protocol_lines(df, util) + ["", "Environment:"] + environment_lines(df, util) + [""]
        out.append(f"Generated by `{command}` from the records in `records/`; "
                   "do not edit by hand.")
        for t in tables:
            out += ["", f"## {t.title}", ""]
            if t.note:
                out += [t.note, ""]
            out.append(pipe_table(t.frame))
            for caption, path in t.pictures:
                out += ["", f"![{caption}]({path})", f"*{caption}*"]
        return "\n".join(out) + "\n"
    if fmt == "latex":
        out = [f"% leakbench leaderboard: {title or suites}",
               "% Generated by `leakbench leaderboard --format latex`; needs booktabs and "
               "graphicx."]
        labels: set[str] = set()
        for t in tables:
            label = _unique(label_slug("tab", title or suites, t.title), labels)
            out += ["", "\\begin{table}[t]", "\\centering", f"\\caption{{{tex(t.title, BREAKS)}}}",
                    f"\\label{{{label}}}", latex_tabular(t.frame)]
            if t.note:
                out += ["\\par\\smallskip", f"{{\\footnotesize {tex_note(t.note)}}}"]
            out.append("\\end{table}")
        return "\n".join(out) + "\n"
    raise LeakbenchError(f"unknown leaderboard format {fmt!r} (expected markdown or latex)")


WRAPPED = {"Note": "0.45"}
"""Columns of prose, set in a paragraph column of this share of the line (an architecture's
note ran 2 000 pt past the page)."""


def latex_tabular(frame: pd.DataFrame) -> str:
    """A table's booktabs ``tabular``, scaled down to the line where it is wider (a wide
    table stays legible in the PDF's zoom; a narrow one keeps its size)."""
    body = tabulate(frame.map(tex_cell), headers=[tex(c) for c in frame.columns],
                    tablefmt="latex_raw", showindex=False, disable_numparse=True)
    lines = body.split("\n")
    rules = [i for i, line in enumerate(lines) if line == "\\hline"]
    for i, rule in zip(rules, ("\\toprule", "\\midrule", "\\bottomrule")):
        lines[i] = rule
    spec = "".join(f"p{{{WRAPPED[c]}\\linewidth}}" if c in WRAPPED else "l"
                   for c in frame.columns)
    lines[0] = f"\\begin{{tabular}}{{{spec}}}"
    return shrink_to_line("\n".join(lines))


def _unique(label: str, taken: set[str]) -> str:
    """``label``, or ``label:2``, ``:3``… where a table of the same title took it (``-2``
    could be another title's own ending: "… batch 2")."""
    n, out = 1, label
    while out in taken:
        n += 1
        out = f"{label}:{n}"
    taken.add(out)
    return out


def tex_cell(value: object) -> str:
    """A table cell as LaTeX: a sentence cell writes its own (bold as ``\\textbf``)."""
    return value.latex() if isinstance(value, Tokens) else tex(str(value))


def tex_note(note: str) -> str:
    """A table's markdown note as LaTeX: escaped, `code` as \\texttt."""
    return re.sub(r"`([^`]*)`", r"\\texttt{\1}", tex(note))


def write_leaderboard(out_dir: Path, fmt: str = "markdown") -> Path:
    """Render the leaderboard of the records under ``out_dir`` into ``out_dir``."""
    out_dir = Path(out_dir)
    records = load_records(out_dir)
    df = records_frame(records)
    if df.empty:
        raise (NoAttackRecords if records else LeakbenchError)(
            no_attack_records(out_dir, records))
    for line in label_splits(records):
        warn(f"{out_dir}: {line}")
    missing = unregistered_metrics(records)
    if missing:  # the plug-in that defines them is not installed here
        warn(f"{out_dir}: the records hold metric(s) {', '.join(map(repr, missing))} that no "
             "installed metric defines: the tables leave them out (install the plug-in that "
             "registers them to render the leaderboard they were run with)")
    name = {"markdown": "leaderboard.md", "latex": "leaderboard.tex"}.get(fmt)
    if name is None:
        raise LeakbenchError(f"unknown leaderboard format {fmt!r} (expected markdown or latex)")
    util = utility_frame(records)
    images = split_modalities(df)[0]
    with shared_summaries():  # the figures and the tables summarise the same scenarios
        plots = write_plots(images, util, out_dir) if fmt == "markdown" and not images.empty \
            else None
        curves = curve_tables(records, out_dir if fmt == "markdown" else None)
        text = render(df, fmt, util=util, plots=plots, archs=architecture_table(records),
                      curves=curves)
    path = out_dir / name
    write_atomic(path, text)
    return path
