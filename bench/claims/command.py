"""``leakbench check DIR``: the papers' claims against a results folder's records.

Writes ``DIR/check.md``, ``DIR/check.tex`` and ``DIR/check.json`` and prints the table.
The exit status is 1 when a claim that **holds** in the reference now **does not hold**; the
reference is each ``--against`` (a ``check.json`` or a folder holding one), else the
``DIR/check.json`` already there, read before it is overwritten: the committed table of a
committed results folder. A check that breaks a held claim of DIR's own check.json leaves
DIR's three files as they were, so that running it again fails again (a retry hid the
break); ``--accept`` writes them. ``--against-records REF`` instead evaluates the claims on REF's
records of the cells DIR has (same cell ids): the reference for a run of a subset of REF's
cells, such as the nightly suite's, where a claim on fewer seeds may read otherwise. A claim
that does not hold stays in the table as such.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.registry import LeakbenchError, short, warn

CHECK_FILES = ("check.md", "check.tex", "check.json")


def add_check_parser(sub: Any) -> None:
    s = sub.add_parser("check", help="test the papers' claims on a results folder; exit 1 "
                                     "when a claim held in the reference now fails")
    s.add_argument("dir")
    s.add_argument("--claims", action="append", help="claims file or built-in name "
                   "(repeatable; default: the claims of the records' suite)")
    s.add_argument("--against", action="append", help="reference check.json, or a folder "
                   "with one (repeatable; default: DIR/check.json before it is rewritten)")
    s.add_argument("--against-records", action="append", metavar="REF", help="results folder "
                   "whose records of DIR's cells give the reference verdicts (repeatable)")
    s.add_argument("--format", default="markdown", choices=["markdown", "latex", "both"],
                   help="what is printed (all three files are written)")
    s.add_argument("--accept", action="store_true", help="write DIR's check files even "
                   "when a held claim of DIR's own check.json broke (they are left as "
                   "they were, the reference, without it)")
    s.set_defaults(func=cmd_check)


def cmd_check(args: argparse.Namespace) -> int:
    from bench.claims.evaluate import FAILS, HOLDS, check_claims
    from bench.claims.render import render_json, render_latex, render_markdown, summary
    from bench.claims.schema import load_claims
    from bench.paths import store_problem
    from bench.store import load_records, write_atomic
    from bench.suite.read import CLAIMS_SUFFIX, SUITES_DIR

    out = Path(args.dir)
    problem = store_problem(out)
    if problem:
        raise LeakbenchError(problem)
    records = load_records(out, quarantine=False)  # a check reads; it moves no file
    if not records:
        raise LeakbenchError(f"no records under {out / 'records'}")
    suites = sorted({str(r.get("suite", "")) for r in records})
    if args.claims:
        files = [load_claims(n) for n in args.claims]
        # a file is about its suite, or else its included files' (a file naming none that
        # includes paper-dlg had rewritten quick's check files under its own name)
        alien = [f for f in files if f.about and not set(f.about) & set(suites)]
        foreign = len(alien) == len(files)
        for f in alien:  # quick's records against paper-dlg's claims: "11 not run", exit 0
            warn(f"check: {f.path.name} holds the claims of suite {', '.join(f.about)}; the "
                 f"records are of {', '.join(suites)}" + ("; the folder's check files are "
                                                         "left as they are" if foreign else ""))
    else:  # the records' suites name built-in claims files only, never a path in the cwd
        foreign = False
        known = [s for s in suites if (SUITES_DIR / f"{s}{CLAIMS_SUFFIX}.yaml").is_file()]
        unknown = ", ".join(repr(s) for s in suites if s not in known)
        if not known:
            raise LeakbenchError(f"{out}: no built-in claims for the records' suite(s) "
                                 f"{unknown}; give --claims")
        if unknown:
            warn(f"check: no built-in claims for suite(s) {unknown}: only the claims of "
                 f"{', '.join(known)} are checked")
        files = [load_claims(n) for n in known]
    claims = _unique_claims(files, "--claims" if args.claims else "the records' suites")
    suite = "+".join(dict.fromkeys(f.suite or f.path.stem for f in files))
    if args.against and args.against_records:
        raise LeakbenchError("--against and --against-records: give one kind of reference")
    # claim id → verdict, and → the check.json it was read from (none for --against-records)
    reference, sources = ((_reference_records(claims, records, args.against_records), {})
                          if args.against_records else _reference(out, args.against))
    own_file = (out / "check.json").resolve()
    own = not args.against_records and set(sources.values()) <= {own_file}  # DIR/check.json
    if args.against and not set(reference) & {c.id for c in claims}:  # a CI gate given the
        # wrong file (another suite's, or one with no rows) had passed: nothing could break
        raise LeakbenchError(f"--against {' '.join(args.against)}: gives a verdict for none of "
                             f"the {len(claims)} claim(s) checked here, so none could break: "
                             "give this suite's check.json")
    unknown = sorted(set(reference) - {c.id for c in claims})
    if unknown and not own:  # a misspelt or foreign reference would hold no claim to account
        warn(f"check: {len(unknown)} claim(s) of the reference are not checked here: "
             f"{_few(unknown)}")
    # DIR/check.json is the next check's reference: the held claims not checked now (a
    # subset, a renamed claim) are kept in it as they were, marked carried (they had been
    # lost, and the next real breakage went unseen); only another suite's claims leave the
    # files alone
    carried = [] if foreign else [r for r in _own_rows(out) if r["verdict"] == HOLDS and
                                  r["claim"] not in {c.id for c in claims}]
    outcomes = check_claims(claims, records)
    texts = {"check.md": render_markdown(suite, outcomes),
             "check.tex": render_latex(suite, outcomes),
             "check.json": render_json(suite, outcomes, carried)}
    # a held claim breaks when it now fails, or when a side's cells are there but none gives
    # a value (every seed crashed with no floor for the metric); a side with no cells at all
    # is "not run", a warning
    broken = [o for o in outcomes if reference.get(o.claim.id) == HOLDS
              and (o.verdict == FAILS or (o.verdict != HOLDS and o.without_value))]
    # DIR's own check.json broken against stays the reference: rewritten, a second run (a
    # CI retry) would read the broken verdicts as the reference and pass
    kept = not args.accept and any(sources.get(o.claim.id) == own_file for o in broken)
    if carried and not kept:
        warn(f"check: {out / 'check.json'} keeps {len(carried)} claim(s) not checked here "
             f"({_few([r['claim'] for r in carried])}) as they were, for the next check; "
             "check.md and check.tex show this check's")
    if kept and not foreign:
        warn(f"check: {out}'s check files are left as they were ({out / 'check.json'} is the "
             "reference the claims broke against); --accept writes this check's")
    if not (foreign or kept):
        for name in texts:  # all three or none: a folder at check.tex had been found after
            if (out / name).is_dir() and not (out / name).is_symlink():  # check.md, .json
                # had been rewritten
                raise LeakbenchError(f"{out / name}: a folder stands where the check's "
                                     f"{name} goes")
        for name, text in texts.items():
            write_atomic(out / name, text)
    if args.format in ("markdown", "both"):
        sys.stdout.write(texts["check.md"])
    if args.format in ("latex", "both"):
        sys.stdout.write(texts["check.tex"])
    for o in outcomes:
        if reference.get(o.claim.id) == HOLDS and o.verdict != HOLDS and o not in broken:
            warn(f"check: claim {o.claim.id} held in the reference and is {o.verdict} now")
    for o in broken:
        print(f"leakbench: claim {o.claim.id} held in the reference and does not hold now: "
              f"{o.measured()} [{o.claim.expectation()}]", file=sys.stderr)
    print(f"leakbench check: {summary(outcomes)}; {len(broken)} held claim(s) broken",
          file=sys.stderr)
    return 1 if broken else 0


def _unique_claims(files: list[Any], given_by: str) -> list[Any]:
    """The files' claims in order, each once: two files may both hold a claim (one includes
    the other, as the nightly claims include the papers'), but not two claims of one id."""
    kept: dict[str, Any] = {}
    for claim in (c for f in files for c in f.claims):
        if claim.id in kept and kept[claim.id] != claim:
            raise LeakbenchError(f"{given_by}: two files give claim id {claim.id!r}, "
                                 "differently")
        kept.setdefault(claim.id, claim)
    return list(kept.values())


def _reference_records(claims: list[Any], records: list[dict[str, Any]],
                       folders: list[str]) -> dict[str, str]:
    """claim id → verdict on the reference folders' records of the cells ``records`` has."""
    from bench.claims.evaluate import check_claims
    from bench.store import load_records

    ids = {r["cell_id"] for r in records}
    ref: dict[str, dict[str, Any]] = {}
    for folder in folders:
        if not (Path(folder) / "records").is_dir():
            raise LeakbenchError(f"--against-records: {folder} has no records folder")
        ref.update({r["cell_id"]: r for r in load_records(Path(folder), quarantine=False)
                    if r["cell_id"] in ids})
    missing = ids - set(ref)
    if missing:  # else those cells would drop out of the reference and nothing could break
        raise LeakbenchError(f"--against-records: {len(missing)} of the {len(ids)} cells have "
                             f"no record in {', '.join(folders)} (e.g. {min(missing)})")
    return {o.claim.id: o.verdict for o in check_claims(claims, list(ref.values()))}


def _few(ids: list[str]) -> str:
    return f"{', '.join(ids[:5])}{', …' if len(ids) > 5 else ''}"


def _own_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of DIR/check.json, where it is one (a damaged file is no reference to keep)."""
    path = out / "check.json"
    try:
        return _check_rows(path) if path.exists() else []
    except LeakbenchError:
        return []


def _reference(out: Path, against: list[str] | None
               ) -> tuple[dict[str, str], dict[str, Path]]:
    """claim id → verdict in the reference check tables (later files win on a repeated id),
    and claim id → the (resolved) check.json that verdict came from."""
    paths = [Path(a) for a in against] if against else [out / "check.json"]
    verdicts: dict[str, str] = {}
    sources: dict[str, Path] = {}
    for path in paths:
        if path.is_dir():
            path = path / "check.json"
        if not path.exists():
            if against:
                raise LeakbenchError(f"--against: {path} does not exist")
            continue  # a first check of DIR: nothing to compare with
        for r in _check_rows(path):
            verdicts[r["claim"]] = r["verdict"]
            sources[r["claim"]] = path.resolve()
    return verdicts, sources


def _check_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a check.json, each with a claim id and a verdict, or one LeakbenchError."""
    from bench.claims.evaluate import VERDICTS
    from bench.claims.render import read_check_json

    data = read_check_json(path)
    rows = data.get("rows") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "claim" in r and
                                             "verdict" in r for r in rows):
        raise LeakbenchError(f"{path}: not a check.json (expected \"rows\": a list of "
                             "objects with a claim and a verdict)")
    for i, r in enumerate(rows):  # "Holds" had silently matched nothing
        if not isinstance(r["claim"], str) or r["verdict"] not in VERDICTS:
            raise LeakbenchError(f"{path}: row {i}: expected a claim id and a verdict of "
                                 f"{', '.join(VERDICTS)}, got {short(r['claim'])} and "
                                 f"{short(r['verdict'])}")
    seen: set[str] = set()
    for i, r in enumerate(rows):  # the last row had won: a claim held and then "not run"
        if r["claim"] in seen:  # no longer guarded the claim
            raise LeakbenchError(f"{path}: row {i}: claim {short(r['claim'])} is given twice")
        seen.add(r["claim"])
    return rows
