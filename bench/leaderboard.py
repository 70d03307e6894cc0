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

from bench.registry import DEFENSES, LeakbenchError
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
            "strength": defense_strength(r["defense"]),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    return df.sort_values("cell_id", kind="stable").reset_index(drop=True)


def defense_strength(chain: list[dict[str, Any]]) -> float | None:
    """The main parameter of a single defense (its ``strength`` attribute, else its first
    numeric parameter), for PSNR-against-strength plots; None for chains and ``none``."""
    if len(chain) != 1:
        return None
    name, params = chain[0]["name"], chain[0]["params"]
    if name not in DEFENSES:
        return None
    cls = DEFENSES.get(name).cls
    key = getattr(cls, "strength", None)
    if key is None:
        numeric = [p.name for p in cls.params if p.type in (float, int)]
        key = numeric[0] if numeric else None
    value = params.get(key) if key else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else None


def utility_frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per utility record: test accuracy and update cosine after defended training."""
    rows = []
    for r in records:
        if r.get("kind") != "utility":
            continue
        m = r.get("metrics") or {}
        rows.append({"dataset": r["dataset_label"], "arch": r["arch_label"],
                     "defense": r["defense_label"], "seed": r["seed"], "status": r["status"],
                     "accuracy": m.get("accuracy"), "update_cosine": m.get("update_cosine"),
                     "chance": m.get("chance"), "cell_id": r["cell_id"],
                     "scenario": (r.get("derived_seeds") or {}).get("scenario")})
    cols = ["dataset", "arch", "defense", "seed", "status", "accuracy", "update_cosine",
            "chance", "cell_id", "scenario"]
    return pd.DataFrame(rows, columns=cols).sort_values("cell_id", kind="stable")


def utility_summary(util: pd.DataFrame, dataset: str, arch: str) -> pd.DataFrame:
    """Per defense: mean accuracy, paired drop against ``none`` on the same scenarios, cosine.

    Runs whose training diverged count at chance accuracy (dropping them would flatter an
    unstable defense). Pairs are matched on the scenario seed (same initialisation and data
    order), not on the seed index, so records of other suites or settings never pair up.
    """
    g = util[(util["dataset"] == dataset) & (util["arch"] == arch)
             & util["status"].isin(["ok", "diverged"])]
    if g.empty:
        return pd.DataFrame(columns=["defense", "accuracy", "drop", "update_cosine"])
    base = g[g["defense"] == "none"].set_index("scenario")["accuracy"]
    rows = []
    for defense, d in g.groupby("defense", sort=True):
        paired = d.set_index("scenario")["accuracy"]
        common = paired.index.intersection(base.index)
        drop = float((base[common] - paired[common]).mean()) if len(common) else None
        rows.append({"defense": defense, "accuracy": float(paired.mean()), "drop": drop,
                     "update_cosine": float(d["update_cosine"].mean())})
    return pd.DataFrame(rows)


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
    # a defense no attack produced a score against ranks last, never first
    out["_key"] = out["psnr"].astype(float).fillna(float("inf"))
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


def defense_tables(df: pd.DataFrame, util: pd.DataFrame | None = None,
                   plots: dict[tuple, str] | None = None) -> list[Table]:
    """Per scenario: defenses ranked by the strongest attack against each (worst case over
    attacks), with the utility track's accuracy, its paired drop and the Pareto front."""
    from bench.plots import pareto_front

    tables = []
    for key, g in _scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        best = strongest_attacks(summary)
        us = utility_summary(util, key[0], key[1]) if util is not None and len(util) else None
        has_utility = us is not None and not us.empty
        front: set[str] = set()
        if has_utility:
            best = best.merge(us, on="defense", how="left")
            both = best[best["psnr"].notna() & best["accuracy"].notna()]
            front = set(pareto_front(both.rename(columns={"defense": "defense_label"})))
        epsilon = g.dropna(subset=["epsilon"]).groupby("defense")["epsilon"].first()
        rows = []
        for rank, (_, r) in enumerate(best.iterrows(), start=1):
            row = {
                "Rank": rank, "Defense": r["defense"], "Strongest attack": r["attack"],
                "PSNR (dB)": _f(r["psnr"], 2), "SSIM": _f(r["ssim"], 3),
                "Success": f"{r['n_success']}/{r['n']}", "Attacks tried": int(r["attacks"]),
            }
            if len(epsilon):
                eps = epsilon.get(r["defense"])
                row["ε"] = "–" if eps is None else _f(eps, 2)
            if has_utility:
                row.update({"Accuracy": _f(r["accuracy"], 3), "Δ acc": _f(r["drop"], 3),
                            "Update cos": _f(r["update_cosine"], 3),
                            "Pareto": "★" if r["defense"] in front else ""})
            rows.append(row)
        note = "Ranked by the best mean PSNR any attack reaches (lower is better)."
        if len(epsilon):
            note += (" ε: the differential-privacy budget at the defense's δ for its configured "
                     "sampling rate and steps (Opacus's accountant), a whole training run's.")
        if has_utility:
            note += (" Accuracy: test accuracy after the utility track's training with defended "
                     "updates (mean over seeds); Δ acc: its drop against `none` on the same "
                     "seeds; Update cos: cosine between defended and clean updates; ★: on the "
                     "privacy–utility Pareto front (lower PSNR, higher accuracy).")
        pics = [(f"figure: {_scenario_title(key)}", plots[key])] if plots and key in plots \
            else []
        tables.append(Table(f"Defenses · {_scenario_title(key)}", pd.DataFrame(rows),
                            note=note, pictures=pics))
    return tables


def _slug(key: tuple) -> str:
    """A file-name form of a scenario title: digits(size=16) · mlp · batch 1 → digits_size_16_…"""
    import re

    return re.sub(r"[^A-Za-z0-9.]+", "_", _scenario_title(key)).strip("_")


def write_plots(df: pd.DataFrame, util: pd.DataFrame, out_dir: Path) -> dict[tuple, str]:
    """Per scenario: privacy–utility scatter with its Pareto front where the utility track ran,
    else PSNR against defense strength. Returns scenario → path relative to ``out_dir``."""
    from bench.plots import plot_privacy_utility, plot_psnr_vs_strength

    paths: dict[tuple, str] = {}
    for key, g in _scenarios(df):
        summary = summarize_attacks(g)
        if summary.empty:
            continue
        best = strongest_attacks(summary)
        title = _scenario_title(key)
        us = utility_summary(util, key[0], key[1]) if len(util) else None
        if us is not None and not us.empty:
            frame = best.merge(us, on="defense")
            frame = frame[frame["psnr"].notna() & frame["accuracy"].notna()]
            if frame.empty:
                continue
            rel = f"plots/privacy_utility_{_slug(key)}.png"
            plot_privacy_utility(frame.rename(columns={"defense": "defense_label"})
                                 [["defense_label", "psnr", "accuracy"]], out_dir / rel, title)
        else:
            strength = g[["defense", "defense_name", "strength"]].drop_duplicates("defense")
            frame = best.merge(strength, on="defense")
            frame = frame[frame["strength"].notna() & frame["psnr"].notna()]
            if frame.empty or frame.groupby("defense_name").size().max() < 2:
                continue
            rel = f"plots/psnr_vs_strength_{_slug(key)}.png"
            plot_psnr_vs_strength(frame.rename(columns={"defense": "defense_label",
                                                        "defense_name": "defense"})
                                  [["defense", "strength", "psnr"]], out_dir / rel, title)
        paths[key] = rel
    return paths


def architecture_table(records: list[dict[str, Any]]) -> Table | None:
    """Per (arch, dataset) of the records: parameters and R-GAP's rank-analysis risk index,
    computed from the architecture alone (no attack involved)."""
    from attacks.rgap_rank import parse_chain, risk_index
    from bench.registry import ARCHS, DATASETS

    seen: dict[tuple[str, str], tuple[dict, dict]] = {}
    for r in records:
        if r.get("kind", "attack") == "attack":
            seen.setdefault((r["arch_label"], r["dataset_label"]), (r["arch"], r["dataset"]))
    rows = []
    for (arch_label, dataset_label), (arch, dataset) in sorted(seen.items()):
        try:
            ds = DATASETS.get(dataset["name"]).cls(**dataset["params"])
            meta = ds.meta()
            model = ARCHS.get(arch["name"]).cls(**arch["params"]).build(meta.shape,
                                                                         meta.num_classes)
        except Exception as e:  # an entry that no longer builds: say so, keep the table
            rows.append({"Arch": arch_label, "Input": dataset_label, "Parameters": "n/a",
                         "Risk index": "n/a", "Note": f"{type(e).__name__}: {e}"})
            continue
        n_params = sum(p.numel() for p in model.parameters())
        index = risk_index(model, meta.shape)
        _, reason = parse_chain(model, tuple(meta.shape))
        rows.append({"Arch": arch_label,
                     "Input": f"{dataset_label} ({'×'.join(map(str, meta.shape))})",
                     "Parameters": f"{n_params:,}",
                     "Risk index": "n/a" if pd.isna(index) else f"{index:.4f}",
                     "Note": "" if not pd.isna(index) else f"outside R-GAP's scope: {reason}"})
    if not rows:
        return None
    return Table("Architectures", pd.DataFrame(rows),
                 note="Risk index: leakbench's summary of R-GAP's rank analysis (Zhu & Blaschko "
                      "2021), the product over layers of rank/unknowns of each layer's "
                      "system; 1 means the gradient determines the input "
                      "(`leakbench rank ARCH` shows the per-layer counts).")


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


def render(df: pd.DataFrame, fmt: str = "markdown", title: str = "",
           util: pd.DataFrame | None = None, plots: dict[tuple, str] | None = None,
           archs: Table | None = None) -> str:
    """The whole leaderboard as one markdown or LaTeX document."""
    if df.empty:
        raise LeakbenchError("no attack records to build a leaderboard from")
    suites = ", ".join(sorted(df["suite"].unique()))
    tables = attack_tables(df) + defense_tables(df, util, plots) + ([archs] if archs else [])
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
    records = load_records(out_dir)
    df = records_frame(records)
    if df.empty:
        raise LeakbenchError(f"no records under {out_dir / 'records'}")
    name = {"markdown": "leaderboard.md", "latex": "leaderboard.tex"}.get(fmt)
    if name is None:
        raise LeakbenchError(f"unknown leaderboard format {fmt!r} (expected markdown or latex)")
    util = utility_frame(records)
    plots = write_plots(df, util, out_dir) if fmt == "markdown" else None
    path = out_dir / name
    write_atomic(path, render(df, fmt, util=util, plots=plots,
                              archs=architecture_table(records)))
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
