"""``leakbench site DIR... --out SITE``: every results folder as browsable, static HTML.

Layout of SITE (every link relative, so the folder can be served anywhere or opened from disk):

- ``index.html``: the suites, one per DIR;
- ``<suite>/index.html``: its leaderboard (the tables of
  :func:`bench.leaderboard.leaderboard_tables`, sortable), with the best/worst
  reconstructions and the figures, redrawn into ``<suite>/plots``;
- ``<suite>/cells.html`` and ``<suite>/cells/<cell>.html``: every record, key fields and JSON;
- ``<suite>/gallery/<scenario>.html``: each finished cell's originals above their
  reconstructions (``<suite>/img``), or, for text, its sentences beside their recoveries;
- ``<suite>/claims.html``: the claims table of ``DIR/check.json`` where there is one.

Like the leaderboard, the site is a pure function of the records: no clock, sorted orders, so
rebuilding gives identical bytes. SITE is built in a temporary sibling folder and renamed
over SITE only when complete, so a failed build leaves the old site as it was; a folder that is
not a site built here is refused rather than overwritten. Every link is relative and
URL-encoded, segment by segment (a folder may be named ``a#b`` or ``50%``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
import pandas as pd
from markupsafe import Markup

from bench.leaderboard import (
    architecture_table,
    environment_lines,
    leaderboard_tables,
    protocol_lines,
    records_frame,
    scenario_slug,
    scenario_title,
    scenarios,
    utility_frame,
    write_plots,
)
from bench.leaderboard.aggregate import is_reference
from bench.leaderboard.curves import curve_tables
from bench.outputs import store_part_problem
from bench.paths import resolved, store_problem
from bench.registry import LeakbenchError
from bench.site.claims import Claims, read_claims
from bench.site.gallery import Shot, write_shot
from bench.site.pages import cell_fields, cells_table
from bench.site.sentences import Sentences, cell_sentences, sentences_note
from bench.site.tables import HtmlTable, anchor, html_table, note_html
from bench.store import load_records

MARKER = ".leakbench-site"  # marks a folder as a site this command may replace
STATIC = ("style.css", "favicon.svg")
RESERVED = frozenset(n.casefold() for n in ("index.html", MARKER, *STATIC))  # not suite names


def url(*segments: str) -> str:
    """A relative link from path segments, each URL-encoded ("a#b" → "a%23b")."""
    return "/".join(quote(s, safe="") for s in segments)


@dataclass
class Gallery:
    """One scenario's reconstructions page: per defense · attack, each seed's cell and shot."""

    title: str
    slug: str
    sections: list[tuple[str, list[dict[str, Any]]]]  # (defense · attack, cells)
    shots: int  # cells with a picture or sentences
    text: bool  # sentences rather than pictures


@dataclass
class SuiteSite:
    """Everything the pages of one results folder show, filled in as the build goes."""

    name: str
    results: Path
    records: list[dict[str, Any]]
    frame: pd.DataFrame
    util: pd.DataFrame  # the utility runs (empty without a utility track)
    claims: Claims | None
    scenario: dict[str, tuple] = field(default_factory=dict)  # cell id → scenario key
    shots: dict[str, Shot] = field(default_factory=dict)
    sentences: dict[str, Sentences] = field(default_factory=dict)  # text cells
    galleries: list[Gallery] = field(default_factory=list)
    tables: list[HtmlTable] = field(default_factory=list)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("bench.site", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    env.filters["note"] = lambda s: Markup(note_html(s))
    env.filters["url"] = lambda s: url(*str(s).split("/"))
    return env


def _check_out(out: Path, dirs: list[Path]) -> None:
    """Refuse an ``out`` this command must not replace (checked before anything is written)."""
    if out.is_symlink():
        raise LeakbenchError(f"--out {out} is a symbolic link; give the folder itself")
    for d in dirs:
        real, out_real = resolved(d), resolved(out, "--out ")
        if real == out_real or out_real in real.parents:
            raise LeakbenchError(f"--out {out} would replace the results folder {d}")
    problem = store_part_problem(out, f"--out {out}")  # a store's records/ or cells/
    if problem:
        raise LeakbenchError(problem)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / MARKER).is_file())):
        raise LeakbenchError(f"--out {out} exists and is not a site built by leakbench "
                             "site; give a new or empty folder")


def _replace(built: Path, out: Path) -> None:
    """Put the finished site ``built`` (a sibling of ``out``) in the place of ``out``."""
    if not out.exists():
        os.replace(built, out)
        return
    old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
    os.replace(out, old / "site")
    try:
        os.replace(built, out)
    except OSError:
        os.replace(old / "site", out)  # put the old site back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _load(results: Path) -> SuiteSite:
    problem = store_problem(results)
    if problem:
        raise LeakbenchError(problem)
    records = load_records(results, quarantine=False)
    if not records:
        raise LeakbenchError(f"no records under {results / 'records'}")
    name = results.resolve().name
    if name.casefold() in RESERVED:
        raise LeakbenchError(f"{results}: a results folder may not be named {name!r}, a file "
                             "of the site's own")
    site = SuiteSite(name, results, records, records_frame(records), utility_frame(records),
                     read_claims(results))
    if not site.frame.empty:
        for key, g in scenarios(site.frame):
            for cell in g["cell_id"]:
                site.scenario[cell] = key
    return site


def _leaderboard(site: SuiteSite, pages: Path) -> None:
    """The leaderboard's tables, with their figures drawn into ``pages/plots``."""
    if site.frame.empty:
        return
    plots = write_plots(site.frame, site.util, pages)
    tables = leaderboard_tables(site.frame, site.util, plots, architecture_table(site.records),
                                curve_tables(site.records, pages))
    by_picture = {r["picture"]: r for r in site.records if r.get("picture")}
    seen: set[str] = set()
    for t in tables:
        slug, n = anchor(t.title), 2
        while slug in seen:
            slug, n = f"{anchor(t.title)}-{n}", n + 1
        seen.add(slug)
        if t.examples:  # sentences: shown as marked tokens, not as the markdown's text
            table = html_table(t.title, slug, [], sentences_note(t.note))
            table.figures = [{"caption": caption, "sentences": site.sentences[cell],
                              "href": url("cells", f"{cell}.html")}
                             for caption, cell in t.examples if cell in site.sentences]
            site.tables.append(table)
            continue
        table = html_table(t.title, slug, t.frame, t.note)
        for caption, rel in t.pictures:
            record = by_picture.get(rel)
            if record is None:
                table.figures.append({"caption": caption, "src": rel, "shot": None})
            elif record["cell_id"] in site.shots:
                table.figures.append({"caption": caption, "shot": site.shots[record["cell_id"]],
                                      "href": url("cells", f"{record['cell_id']}.html")})
        site.tables.append(table)


def _galleries(site: SuiteSite) -> None:
    if site.frame.empty:
        return
    for key, g in scenarios(site.frame):
        sections: dict[str, list[dict[str, Any]]] = {}
        shots = 0
        for _, r in g.sort_values(["defense", "attack", "seed", "cell_id"], kind="stable"
                                  ).iterrows():
            shot = site.shots.get(r["cell_id"])
            text = site.sentences.get(r["cell_id"])
            shots += shot is not None or text is not None
            sections.setdefault(f"{r['defense']} · {r['attack']}", []).append(
                {"cell": r["cell_id"], "seed": r["seed"], "status": r["status"], "shot": shot,
                 "sentences": text})
        if shots:
            site.galleries.append(Gallery(scenario_title(key), scenario_slug(key),
                                          list(sections.items()), shots,
                                          bool((g["modality"] == "text").all())))


def attack_count(frame: pd.DataFrame) -> str:
    """The attacks a suite ran, its references (that read no update) counted apart."""
    if frame.empty:
        return "0"
    names = dict(zip(frame["attack"], frame["attack_name"]))
    refs = sum(is_reference(name) for name in names.values())
    return f"{len(names) - refs}" + (f" (+{refs} reference)" if refs else "")


def suite_row(site: SuiteSite) -> dict[str, str]:
    """A suite's row in the site's index."""
    statuses = Counter(r["status"] for r in site.records)
    frame = site.frame
    return {"Suite": site.name, "Cells": str(len(site.records)),
            "Statuses": ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
            "Scenarios": str(len(set(site.scenario.values()))),
            "Attacks": attack_count(frame),
            "Defenses": str(frame["defense"].nunique()) if not frame.empty else "0",
            "Pictures": str(len(site.shots)),
            "Claims": site.claims.counts() if site.claims else "–"}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))


def _claims_table(claims: Claims) -> HtmlTable | None:
    return html_table(f"Claims of {claims.suite}", "claims", claims.rows) if claims.rows \
        else None


def _write_suite(env: jinja2.Environment, site: SuiteSite, pages: Path) -> int:
    """Every page of one suite; returns how many were written."""
    name = site.name
    home = ("results", "../index.html")
    suite_crumb = (name, "index.html")
    prot = protocol_lines(site.frame, site.util) if not site.frame.empty else []
    envs = [line.removeprefix("- ") for line in environment_lines(site.frame, site.util)] \
        if not site.frame.empty else []
    skipped = not site.frame.empty and bool((site.frame["status"] == "skipped").all())
    _write(pages / "index.html", env.get_template("suite.html").render(
        root="../", crumbs=[home, (name, None)], site=site, sortable=True, skipped=skipped,
        protocol=[p for p in prot if p], environment=envs))
    cells = cells_table(site.records, site.scenario)
    _write(pages / "cells.html", env.get_template("cells.html").render(
        root="../", crumbs=[home, suite_crumb, ("cells", None)], site=site, table=cells,
        sortable=True))
    count = 2
    for gallery in site.galleries:
        _write(pages / "gallery" / f"{gallery.slug}.html", env.get_template(
            "gallery.html").render(root="../../", up="../", gallery=gallery, site=site,
                                   crumbs=[("results", "../../index.html"),
                                           (name, "../index.html"),
                                           (f"gallery: {gallery.title}", None)],
                                   sortable=False))
        count += 1
    slugs = {g.title: g.slug for g in site.galleries}
    for r in site.records:
        key = site.scenario.get(r["cell_id"])
        title = scenario_title(key) if key else None
        _write(pages / "cells" / f"{r['cell_id']}.html", env.get_template("cell.html").render(
            root="../../", up="../", record=r, fields=cell_fields(r, title),
            shot=site.shots.get(r["cell_id"]), sentences=site.sentences.get(r["cell_id"]),
            gallery=slugs.get(title or ""), sortable=False,
            json=json.dumps(r, indent=1, sort_keys=True, ensure_ascii=False),
            crumbs=[("results", "../../index.html"), (name, "../index.html"),
                    ("cells", "../cells.html"), (r["cell_id"], None)]))
        count += 1
    if site.claims is not None:
        table = _claims_table(site.claims)
        _write(pages / "claims.html", env.get_template("claims.html").render(
            root="../", crumbs=[home, suite_crumb, ("claims", None)], site=site, table=table,
            sortable=True))
        count += 1
    return count


def build_site(dirs: list[Path], out: Path) -> str:
    """Write the site of the results folders ``dirs`` into ``out``; returns a one-line summary."""
    dirs = [Path(d) for d in dirs]
    for d in dirs:  # its name is the suite's page folder and link text, in UTF-8 HTML
        if not resolved(d).name.isprintable():  # a byte not UTF-8 decodes to a surrogate
            raise LeakbenchError(f"{os.fsdecode(d)!r}: the site names a suite by its folder, "
                                 "and this name is not printable UTF-8: rename the folder")
    names = [d.resolve().name.casefold() for d in dirs]  # one folder on a case-blind disk
    dupes = sorted({d.resolve().name for d, n in zip(dirs, names) if names.count(n) > 1})
    if dupes:
        raise LeakbenchError(f"two results folders named {dupes[0]!r}: the site names a suite "
                             "by its folder")
    sites = [_load(d) for d in dirs]
    out = Path(out)
    _check_out(out, dirs)
    target = Path(os.path.abspath(out))  # "." or "x/.." has a name and a parent
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))
    except OSError as e:
        raise LeakbenchError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        summary = _build(sites, building)
        (building / MARKER).write_text("built by `leakbench site`; replaced whole on each "
                                       "build\n")
        building.chmod(0o755)  # mkdtemp's 0700 would hide the site from a web server
        _replace(building, target)
    except OSError as e:
        raise LeakbenchError(f"--out {out}: cannot write the site ({e.strerror or e})"
                             ) from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return f"{summary} → {out / 'index.html'}"


def _build(sites: list[SuiteSite], out: Path) -> str:
    env = _environment()
    pages = images = 0
    for site in sites:
        folder = out / site.name
        for r in site.records:
            text = cell_sentences(r)
            if text is not None:
                site.sentences[r["cell_id"]] = text
                continue
            shot = write_shot(r, site.results, folder)
            if shot is not None:
                site.shots[r["cell_id"]] = shot
                images += 2 * len(shot.pairs) or 1
        _leaderboard(site, folder)
        _galleries(site)
        pages += _write_suite(env, site, folder)
    rows = [suite_row(s) for s in sites]
    _write(out / "index.html", env.get_template("index.html").render(
        root="", crumbs=[("results", None)], sortable=True,
        table=html_table("Suites", "suites", rows, links={"Suite": [
            url(s.name, "index.html") for s in sites]}), sites=sites))
    for static in STATIC:
        shutil.copyfile(Path(__file__).parent / "static" / static, out / static)
    return f"site: {len(sites)} suite(s), {pages + 1} pages, {images} pictures"
