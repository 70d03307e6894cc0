"""Leaderboards: pure functions of the records, rendered with pandas and tabulate.

Nothing here reads a clock or the machine: the same records give byte-identical
markdown, LaTeX and CSV (stable sort orders, fixed decimals, environment taken from
the records' provenance).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from bench.registry import LeakbenchError
from bench.store import load_records, write_atomic

EXPORT_COLUMNS = [
    "cell_id", "suite", "attack", "defense", "arch", "dataset", "batch_size", "seed", "status",
    "psnr", "ssim", "mse", "label_acc", "attack_seconds",
    "psnr_worst", "ssim_worst", "mse_worst", "success", "lpips",
    "attack_name", "defense_name", "arch_name", "dataset_name", "mode", "bn_mode", "victim",
    "granted", "iterations", "grad_evals", "setup_seconds", "score_seconds",
    "peak_memory_bytes", "memory_kind", "device", "device_name", "torch", "leakbench",
    "git_commit", "epsilon", "error",
]
SCENARIO = ["dataset", "arch", "batch_size", "mode", "bn_mode", "victim"]
FAILED = ("error", "timeout")


def _metric(r: dict[str, Any], key: str) -> Any:
    m = r.get("metrics") or {}
    return m.get(key)


def records_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One flat row per cell record (utility records excluded), ordered by cell id."""
    rows = []
    for r in records:
        if r.get("kind", "attack") != "attack":
            continue
        prov = r.get("provenance") or {}
        timing = r.get("timing") or {}
        client = r.get("client") or {}
        rows.append({
            "cell_id": r["cell_id"], "suite": r["suite"],
            "attack": r["attack_label"], "defense": r["defense_label"],
            "arch": r["arch_label"], "dataset": r["dataset_label"],
            "batch_size": r["batch_size"], "seed": r["seed"], "status": r["status"],
            "psnr": _metric(r, "psnr"), "ssim": _metric(r, "ssim"), "mse": _metric(r, "mse"),
            "label_acc": _metric(r, "label_acc"),
            "attack_seconds": timing.get("attack_seconds"),
            "psnr_worst": _metric(r, "psnr_worst"), "ssim_worst": _metric(r, "ssim_worst"),
            "mse_worst": _metric(r, "mse_worst"), "success": _metric(r, "success"),
            "lpips": _metric(r, "lpips"),
            "attack_name": r["attack"]["name"],
            "defense_name": "+".join(d["name"] for d in r["defense"]),
            "arch_name": r["arch"]["name"], "dataset_name": r["dataset"]["name"],
            "mode": client.get("mode"), "bn_mode": client.get("bn_mode"),
            "victim": r.get("victim"), "granted": ",".join(r.get("granted") or []),
            "iterations": r.get("iterations"), "grad_evals": r.get("grad_evals"),
            "setup_seconds": timing.get("setup_seconds"),
            "score_seconds": timing.get("score_seconds"),
            "peak_memory_bytes": r.get("peak_memory_bytes"), "memory_kind": r.get("memory_kind"),
            "device": prov.get("device"), "device_name": prov.get("device_name"),
            "torch": prov.get("torch"), "leakbench": prov.get("leakbench"),
            "git_commit": prov.get("git_commit"),
            "epsilon": (r.get("defense_info") or {}).get("epsilon"),
            "error": r.get("error"),
            "picture": r.get("picture"),
            "success_psnr": r.get("success_psnr"),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values("cell_id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# aggregation


def summarize_attacks(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (defense, attack): metrics over seeds. Non-finished runs count against success."""
    ran = cells[cells["status"] != "skipped"]
    rows = []
    for (defense, attack), g in ran.groupby(["defense", "attack"], sort=True):
        ok = g[g["status"] == "ok"]
        rows.append({
            "defense": defense, "attack": attack,
            "psnr": _mean(ok["psnr"]), "psnr_std": _std(ok["psnr"]),
            "ssim": _mean(ok["ssim"]), "label_acc": _mean(ok["label_acc"]),
            "lpips": _mean(ok["lpips"]) if "lpips" in ok else None,
            "success": float(ok["success"].fillna(False).astype(bool).sum()) / len(g),
            "n_success": int(ok["success"].fillna(False).astype(bool).sum()),
            "n": len(g), "n_ok": len(ok),
            "diverged": int((g["status"] == "diverged").sum()),
            "failed": int(g["status"].isin(FAILED).sum()),
            "time": _median(ok["attack_seconds"]),
            "grad_evals": _median(ok["grad_evals"]),
        })
    return pd.DataFrame(rows)


def _mean(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.mean()) if len(s) else None


def _std(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.std(ddof=0)) if len(s) else None


def _median(s: pd.Series) -> float | None:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return float(s.median()) if len(s) else None


def _defense_order(label: str) -> tuple[int, str]:
    return (0 if label == "none" else 1, label)


def strongest_attacks(summary: pd.DataFrame) -> pd.DataFrame:
    """Per defense: the attack with the highest mean PSNR against it (ties: by name)."""
    rows = []
    for _, g in summary.groupby("defense", sort=True):
        scored = g[g["psnr"].notna()]
        if scored.empty:
            best = g.sort_values("attack").iloc[0].to_dict()
            best["psnr"] = None
        else:
            best = scored.sort_values(["psnr", "attack"], ascending=[False, True],
                                      kind="stable").iloc[0].to_dict()
        best["attacks"] = len(g)
        rows.append(best)
    out = pd.DataFrame(rows)
    out["_key"] = out["psnr"].fillna(-1e9)
    return out.sort_values(["_key", "defense"], kind="stable").drop(columns="_key")


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass
class Table:
    title: str
    frame: pd.DataFrame
    note: str = ""
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, relative path)


def _f(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _scenario_title(key: tuple) -> str:
    dataset, arch, bs, mode, bn_mode, victim = key
    parts = [f"{dataset}", f"{arch}", f"batch {bs}"]
    if mode and mode != "fedsgd":
        parts.append(mode)
    if bn_mode and bn_mode != "train":
        parts.append(f"BN {bn_mode}")
    if victim and victim != "init":
        parts.append(f"victim {victim}")
    return " · ".join(parts)


def _scenarios(df: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    keyed = df.assign(**{c: df[c].fillna("") for c in ["mode", "bn_mode", "victim"]})
    return [(key, g) for key, g in keyed.groupby(SCENARIO, sort=True)]


def _pictures(g: pd.DataFrame) -> list[tuple[str, str]]:
    ok = g[(g["status"] == "ok") & g["picture"].notna()]
    if ok.empty:
        return []
    ordered = ok.sort_values(["psnr", "cell_id"], ascending=[False, True], kind="stable")
    best, worst = ordered.iloc[0], ordered.iloc[-1]
    pics = [(f"best: {best['attack']} vs {best['defense']}, seed {best['seed']}, "
             f"{best['psnr']:.2f} dB", best["picture"])]
    if worst["cell_id"] != best["cell_id"]:
        pics.append((f"worst: {worst['attack']} vs {worst['defense']}, seed {worst['seed']}, "
                     f"{worst['psnr']:.2f} dB", worst["picture"]))
    return pics


def attack_tables(df: pd.DataFrame) -> list[Table]:
    tables = []
    for key, g in _scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        summary["_d"] = summary["defense"].map(_defense_order)
        summary["_p"] = summary["psnr"].fillna(-1e9)
        summary = summary.sort_values(["_d", "_p", "attack"], ascending=[True, False, True],
                                      kind="stable")
        summary["rank"] = summary.groupby("defense", sort=False).cumcount() + 1
        has_lpips = summary["lpips"].notna().any()
        rows = []
        for _, r in summary.iterrows():
            row = {
                "Defense": r["defense"], "Rank": int(r["rank"]), "Attack": r["attack"],
                "PSNR (dB)": _f(r["psnr"], 2), "± std": _f(r["psnr_std"], 2),
                "SSIM": _f(r["ssim"], 3),
            }
            if has_lpips:
                row["LPIPS"] = _f(r["lpips"], 3)
            row.update({
                "Label acc": _f(r["label_acc"], 2),
                "Success": f"{r['n_success']}/{r['n']}",
                "Median time (s)": _f(r["time"], 2),
                "Grad evals": _f(r["grad_evals"], 0),
                "Diverged": int(r["diverged"]), "Failed": int(r["failed"]),
            })
            rows.append(row)
        tables.append(Table(f"Attacks · {_scenario_title(key)}", pd.DataFrame(rows),
                            pictures=_pictures(g)))
    return tables


def defense_tables(df: pd.DataFrame) -> list[Table]:
    tables = []
    for key, g in _scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        best = strongest_attacks(summary)
        rows = []
        for rank, (_, r) in enumerate(best.iterrows(), start=1):
            rows.append({
                "Rank": rank, "Defense": r["defense"], "Strongest attack": r["attack"],
                "PSNR (dB)": _f(r["psnr"], 2), "SSIM": _f(r["ssim"], 3),
                "Success": f"{r['n_success']}/{r['n']}", "Attacks tried": int(r["attacks"]),
            })
        tables.append(Table(f"Defenses · {_scenario_title(key)}", pd.DataFrame(rows),
                            note="Ranked by the best mean PSNR any attack reaches "
                                 "(lower is better)."))
    return tables


def _environment(df: pd.DataFrame) -> list[str]:
    def uniq(col: str) -> str:
        vals = sorted({str(v) for v in df[col].dropna()}) if col in df else []
        return ", ".join(vals) if vals else "n/a"

    return [
        f"- leakbench: {uniq('leakbench')} (commit {uniq('git_commit')})",
        f"- torch: {uniq('torch')}",
        f"- devices: {uniq('device_name')} ({uniq('device')})",
    ]


def protocol_lines(df: pd.DataFrame) -> list[str]:
    statuses = df["status"].value_counts().sort_index()
    counts = ", ".join(f"{n} {s}" for s, n in statuses.items())
    threshold = sorted({float(v) for v in df["success_psnr"].dropna()})
    thr = ", ".join(f"{t:g}" for t in threshold) or "n/a"
    return [
        f"Cells: {len(df)} ({counts}).",
        "",
        "Protocol: each cell draws a private batch and a victim model from its seed; the client "
        "computes its update, the defense transforms it, and the attack sees only the "
        "observation its threat model grants (model, defended update, batch size). "
        "Reconstructions and originals are de-normalised to [0,1], matched one-to-one "
        "(Hungarian, on MSE) and scored per image: PSNR (data range 1, capped at 100 dB), "
        "Gaussian-window SSIM (torchmetrics). Metrics are means over finished seeds; "
        f"a run succeeds when its mean PSNR reaches {thr} dB; diverged and failed runs count "
        "as unsuccessful. Time is the attack alone (median over seeds).",
    ]


def render(df: pd.DataFrame, fmt: str = "markdown", title: str = "") -> str:
    """The whole leaderboard as one markdown or LaTeX document."""
    if df.empty:
        raise LeakbenchError("no attack records to build a leaderboard from")
    suites = ", ".join(sorted(df["suite"].unique()))
    tables = attack_tables(df) + defense_tables(df)
    if fmt == "markdown":
        out = [f"# leakbench leaderboard: {title or suites}", ""]
        out += protocol_lines(df) + ["", "Environment:"] + _environment(df) + [""]
        out.append("Generated by `leakbench leaderboard` from the records in `records/`; "
                   "do not edit by hand.")
        for t in tables:
            out += ["", f"## {t.title}", ""]
            if t.note:
                out += [t.note, ""]
            out.append(tabulate(t.frame, headers="keys", tablefmt="github", showindex=False,
                                disable_numparse=True))
            for caption, path in t.pictures:
                out += ["", f"![{caption}]({path})", f"*{caption}*"]
        return "\n".join(out) + "\n"
    if fmt == "latex":
        out = [f"% leakbench leaderboard: {title or suites}",
               "% Generated by `leakbench leaderboard --format latex`; needs booktabs."]
        for t in tables:
            out += ["", "\\begin{table}[t]", "\\centering", f"\\caption{{{_tex(t.title)}}}",
                    tabulate(t.frame.map(lambda v: _tex(str(v))), headers=[_tex(c) for c in
                                                                          t.frame.columns],
                             tablefmt="latex_raw", showindex=False, disable_numparse=True),
                    "\\end{table}"]
        return "\n".join(out) + "\n"
    raise LeakbenchError(f"unknown leaderboard format {fmt!r} (expected markdown or latex)")


def _tex(s: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"),
                 ("#", "\\#"), ("±", "$\\pm$"), ("·", "$\\cdot$")):
        s = s.replace(a, b)
    return s


def write_leaderboard(out_dir: Path, fmt: str = "markdown") -> Path:
    """Render the leaderboard of the records under ``out_dir`` into ``out_dir``."""
    out_dir = Path(out_dir)
    df = records_frame(load_records(out_dir))
    if df.empty:
        raise LeakbenchError(f"no records under {out_dir / 'records'}")
    name = {"markdown": "leaderboard.md", "latex": "leaderboard.tex"}.get(fmt)
    if name is None:
        raise LeakbenchError(f"unknown leaderboard format {fmt!r} (expected markdown or latex)")
    path = out_dir / name
    write_atomic(path, render(df, fmt))
    return path


def export(out_dir: Path, fmt: str = "csv", output: Path | None = None) -> Path:
    """One flat row per cell, in a stable column and row order."""
    if fmt != "csv":
        raise LeakbenchError(f"unknown export format {fmt!r} (expected csv)")
    df = records_frame(load_records(Path(out_dir)))
    if df.empty:
        raise LeakbenchError(f"no records under {Path(out_dir) / 'records'}")
    path = Path(output) if output else Path(out_dir) / "cells.csv"
    write_atomic(path, df[EXPORT_COLUMNS].to_csv(index=False, float_format="%.6g",
                                                 lineterminator="\n"))
    return path
