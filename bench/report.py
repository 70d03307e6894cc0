"""``leakbench report DIR``: one self-contained markdown page for a paper appendix or a CI
artifact — the leaderboard tables, the figures, FID/KID pooled per leaderboard group, and a
gallery of every scenario's reconstructions. All links are relative to DIR and point at files
that exist; like the leaderboard, the page is a pure function of the records (and of the
locally available FID weights, which only decide between numbers and n/a).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.leaderboard import (
    architecture_table,
    records_frame,
    render,
    scenario_title,
    scenarios,
    utility_frame,
    write_plots,
)
from bench.leaderboard.aggregate import shared_summaries
from bench.leaderboard.curves import curve_tables
from bench.leaderboard.frames import no_attack_records
from bench.leaderboard.render import split_modalities
from bench.markdown import pipe_table
from bench.metrics import fixed, get_metric
from bench.metrics.fid import MIN_GROUP, fid_kid_of_group
from bench.pictures import artifact_path, load_cell_arrays
from bench.registry import LeakbenchError, warn
from bench.store import load_records, write_atomic

POOLED_NOTE = (
    "Reconstructions of a group's finished cells, pooled over seeds, against the originals of "
    f"the same cells (torch-fidelity; at least {MIN_GROUP} images). KID: the mean over 100 "
    "random halves of the group; KID std: their spread, an estimate of the KID's sampling "
    "error.")
"""What a pooled FID/KID table measures (the report's and ``prior-curve --attacks``')."""


def pooled_fid_kid(out_dir: Path, df: pd.DataFrame, weights: str | None = None,
                   min_group: int = MIN_GROUP, feature_layer: str = "2048",
                   measure: Callable[[list, list], dict[str, Any]] | None = None
                   ) -> pd.DataFrame:
    """Per leaderboard group (scenario × defense × attack): FID/KID of the reconstructions pooled
    over its finished cells against the originals of the same cells; n/a below ``min_group``.
    ``measure(originals, recons)`` replaces the Inception measurement (other features)."""
    fid, kid = get_metric("fid"), get_metric("kid")
    rows = []
    for key, g in scenarios(df):
        ok = g[(g["status"] == "ok") & g["arrays"].notna()]
        for (defense, attack), cells in ok.groupby(["defense", "attack"], sort=True):
            originals, recons = group_arrays(out_dir, cells)
            result = (measure(originals, recons) if measure is not None else
                      fid_kid_of_group(originals, recons, weights, min_group, feature_layer))
            rows.append({"Scenario": scenario_title(key), "Defense": defense, "Attack": attack,
                         "Images": result["n"], fid.header(): fid.format(result["fid"]),
                         kid.header(): kid.format(result["kid"]),
                         "KID std": kid.format(result.get("kid_std")),  # over random halves
                         "Note": result["reason"] or ""})
    return pd.DataFrame(rows)


def group_arrays(out_dir: Path, cells: pd.DataFrame) -> tuple[list, list]:
    """The originals and reconstructions of a group's cells, each file checked against its
    record (:func:`observed_images`; a record from before ``input_meta`` by its count, and its
    images by the shape most of the group's hold): one that disagrees, or cannot be read, is
    left out with a warning (another width had crashed the pool's ``torch.cat``)."""
    loaded = []
    shapes = cells["images_shape"] if "images_shape" in cells else [None] * len(cells)
    for cell, rel, expected in sorted(zip(cells["cell_id"], cells["arrays"], shapes)):
        path = artifact_path(out_dir, rel, cell)
        if path is None:
            continue
        try:
            o, r = load_cell_arrays(path)
        except (OSError, ValueError, TypeError, EOFError) as e:
            warn(f"cell {cell}: cannot read {rel} ({type(e).__name__}: {e}); left out of "
                 "FID/KID")
            continue
        if isinstance(expected, tuple) and tuple(o.shape)[:len(expected)] != expected:
            warn(f"cell {cell}: {rel} holds images of shape {tuple(o.shape)}, its record's "
                 f"observed batch {expected}; left out of FID/KID")
            continue
        loaded.append((cell, rel, o, r))
    common = Counter(tuple(o.shape[1:]) for _, _, o, _ in loaded).most_common(1)
    originals, recons = [], []
    for cell, rel, o, r in loaded:
        if tuple(o.shape[1:]) != common[0][0]:
            warn(f"cell {cell}: {rel} holds images of shape {tuple(o.shape[1:])}, most of its "
                 f"group's {common[0][0]}; left out of FID/KID")
            continue
        originals.append(o)
        recons.append(r)
    return originals, recons


def _gallery(df: pd.DataFrame) -> list[str]:
    psnr, ssim = get_metric("psnr"), get_metric("ssim")
    out = []
    for key, g in scenarios(df):
        ok = g[(g["status"] == "ok") & g["picture"].notna()]
        if ok.empty:
            continue
        out += ["", f"### {scenario_title(key)}", ""]
        ordered = ok.sort_values(["defense", "attack", "seed"], kind="stable")
        for _, r in ordered.iterrows():
            caption = (f"{r['attack']} vs {r['defense']}, seed {r['seed']}: "
                       f"{fixed(r['psnr'], psnr.digits)} {psnr.unit}, "
                       f"{ssim.label} {fixed(r['ssim'], ssim.digits)}")
            out.append(f"![{caption}]({r['picture']}) {caption}  ")
    return out


def attack_frame(out_dir: Path) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """The records of DIR and the leaderboard frame of its attack cells, with each cell's
    saved arrays (for pooled FID/KID)."""
    records = load_records(out_dir)
    df = records_frame(records)
    if df.empty:
        raise LeakbenchError(no_attack_records(out_dir, records))
    attack = sorted((r for r in records if r.get("kind", "attack") == "attack"),
                    key=lambda r: r["cell_id"])
    df["arrays"] = [r.get("arrays") for r in attack]
    df["images_shape"] = [observed_images(r) for r in attack]
    return records, df


def observed_images(record: dict[str, Any]) -> tuple[int, ...] | None:
    """The shape of the originals a record's arrays hold: its observed batch (a secure
    aggregate's every client's images) of its input shape, or the count alone where the
    record predates ``input_meta``; None where it names neither."""
    n = (record.get("aggregate") or {}).get("observed_batch", record.get("batch_size"))
    if not isinstance(n, int):
        return None
    shape = (record.get("input_meta") or {}).get("shape")
    return (n, *shape) if isinstance(shape, list) else (n,)


def write_report(out_dir: Path, fid_weights: str | None = None, fid_layer: str = "2048"
                 ) -> Path:
    """Write ``DIR/report.md``; returns its path. ``fid_layer`` other than the standard
    "2048" is for cheap checks only (not comparable with published FID)."""
    out_dir = Path(out_dir)
    records, df = attack_frame(out_dir)
    util = utility_frame(records)
    images = split_modalities(df)[0]  # text cells show sentences, not plots or pictures
    with shared_summaries():  # the figures and the tables summarise the same scenarios
        plots = write_plots(images, util, out_dir) if not images.empty else None
        page = render(df, "markdown", util=util,  # titled by its suites, as the leaderboard
                      plots=plots, archs=architecture_table(records),
                      curves=curve_tables(records, out_dir), command="leakbench report")
    fid = pooled_fid_kid(out_dir, df, fid_weights, feature_layer=fid_layer)
    lines: list[str] = [page.rstrip("\n"), "", "## FID and KID, pooled per leaderboard group", ""]
    lines.append(POOLED_NOTE)
    lines += ["", pipe_table(fid) if not fid.empty else
              "None here: no finished image cell with saved arrays."]
    gallery = _gallery(df)
    lines += ["", "## Gallery", "",
              "Each picture: the private images (top) above their matched reconstructions "
              "(bottom)." if gallery else "None here: no finished image cell has a picture."]
    lines += gallery
    text = "\n".join(lines) + "\n"
    broken = unreadable_links(out_dir, text)
    if broken:  # they had been linked in silence
        warn(f"report: {len(broken)} linked file(s) missing or unreadable (e.g. {broken[0]}): "
             "re-run their cells with --force, or restore the files")
    path = out_dir / "report.md"
    write_atomic(path, text)
    return path


def unreadable_links(out_dir: Path, markdown: str) -> list[str]:
    """The relative link targets of ``markdown`` that are not a readable file in ``out_dir``:
    missing, a folder, or a picture PIL cannot read (a damaged .png)."""
    from PIL import Image

    broken = []
    for rel in dict.fromkeys(linked_files(markdown)):
        if rel.startswith("#"):  # a section of the page itself
            continue
        path = out_dir / rel.split("#", 1)[0]
        try:
            if not path.is_file():
                raise OSError("not a file")
            if path.suffix.lower() == ".png":
                with Image.open(path) as image:
                    image.verify()
        except Exception:  # noqa: BLE001 - PIL raises many kinds for a damaged file
            broken.append(rel)
    return broken


def linked_files(markdown: str) -> list[str]:
    """Relative link targets of a markdown page (images and links)."""
    import re

    return [t for t in re.findall(r"\]\(([^)\s]+)\)", markdown) if "://" not in t]

