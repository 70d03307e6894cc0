"""The check table as markdown, LaTeX (booktabs) and JSON; same outcomes, same bytes.

``check.json``'s schema (the site reads it)::

    {"suite": str, "rows": [{"claim": str, "paper": str, "sentence": str, "reported": str,
      "measured": str, "verdict": "holds" | "does not hold" | "not run" | "not judged", ...}]}

with extra keys per row (``metric``, ``expectation``, ``where``, ``value``, ``other``,
``difference``: a separated ordering's paired per-batch difference, or null), and
``"carried": true`` on a row an earlier check wrote for a held claim not checked this time
(kept as the next check's reference; check.md, check.tex and the site leave it out).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bench.claims.evaluate import VERDICTS, Outcome
from bench.latex import BREAKS, tex
from bench.markdown import pipe_table
from bench.registry import LeakbenchError

MAX_CHECK_BYTES = 50_000_000  # as a record's limit: thousands of claims fit


def read_check_json(path: Path) -> Any:
    """The parsed JSON of a ``check.json`` (the reference of ``check --against``, the site's
    claims table), or one LeakbenchError naming the file: a regular file of at most
    ``MAX_CHECK_BYTES`` (a FIFO hung the reader and ``/dev/zero`` filled its memory), UTF-8
    JSON nested no deeper than the parser's limit."""
    try:
        if not path.is_file():
            raise LeakbenchError(f"{path}: not a check.json (not a regular file)")
        if path.stat().st_size > MAX_CHECK_BYTES:
            raise LeakbenchError(f"{path}: not a check.json (larger than {MAX_CHECK_BYTES} "
                                 "bytes)")
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise LeakbenchError(f"{path}: cannot be read ({e.strerror or type(e).__name__})"
                             ) from None
    except (ValueError, RecursionError) as e:  # a decode or JSON error, or nested too deep
        raise LeakbenchError(f"{path}: not a check.json ({type(e).__name__}: {e})"[:300]
                             ) from None


HEADERS = ("Claim", "Paper", "Sentence", "Reported", "Measured", "Verdict")
WIDTHS = (0.1, 0.11, 0.22, 0.11, 0.18, 0.09)  # of \linewidth, with 3pt column gaps: it fits
# a claim id's words may hyphenate (TeX does not after an explicit hyphen, and
# "rank-cnn6-determined" overran its column)
ID_BREAKS = {**BREAKS, "-": "-\\hspace{0pt}"}


def as_json(suite: str, outcomes: list[Outcome]) -> dict[str, Any]:
    return {"suite": suite, "rows": [o.row() for o in outcomes]}


def render_json(suite: str, outcomes: list[Outcome], carried: list[dict[str, Any]] = ()
                ) -> str:
    """``check.json``: this check's rows, then ``carried`` (rows of an earlier check.json
    whose claims were not checked now, kept for the next check's reference) marked
    ``"carried": true``."""
    data = as_json(suite, outcomes)
    data["rows"] += [{**r, "carried": True} for r in carried]
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def summary(outcomes: list[Outcome]) -> str:
    """``5 hold, 1 do not hold, 0 not run (6 claims)``; ``, 1 not judged`` before the
    parenthesis when a claim is."""
    counts = {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
    unjudged = f", {counts['not judged']} not judged" if counts["not judged"] else ""
    return (f"{counts['holds']} hold, {counts['does not hold']} do not hold, "
            f"{counts['not run']} not run{unjudged} ({len(outcomes)} claims)")


def _cells(o: Outcome) -> list[str]:
    row = o.row()
    return [row["claim"], row["paper"], row["sentence"], row["reported"],
            f"{row['measured']} [{row['expectation']}]", row["verdict"]]


def render_markdown(suite: str, outcomes: list[Outcome]) -> str:
    body = pipe_table([_cells(o) for o in outcomes], HEADERS)  # a | in a cell escaped
    return (f"# leakbench check: {suite}\n\n"
            "Each claim of the papers, tested on this folder's records by `leakbench check`. "
            "Measured: the mean over the claim's seeds ± the half-width of its 95% Student-t "
            "interval (a success rate or a share such as label accuracy: [its 95% Wilson "
            "interval]; a diverged, failed or "
            "timed-out seed counts at its floor, and as no success; cells on one private "
            "batch, pooled over defenses or attacks, count as one seed at their mean), then "
            "the expectation tested, in brackets. An ordering compares two "
            "means; where the claim says so (separated at 95%), the 95% interval of the "
            "paired per-batch difference must exclude 0 (two sides on the same private "
            "batches) or the two intervals must not overlap. Generated from the records "
            "and the claims file; do not edit by hand.\n\n"
            f"{summary(outcomes)}.\n\n{body}\n")


ROWS_PER_FLOAT = 5
"""Claims per ``table`` float: a row of the paper suites' checks is some 90 pt tall on an
article page, so paper-dlg's 11 in one float ran 354 pt past the page; the rows go on in
floats captioned "(continued)"."""


def render_latex(suite: str, outcomes: list[Outcome]) -> str:
    slug = re.sub(r"[^A-Za-z0-9.+-]+", "-", suite)
    caption = tex(f"Claims of suite {suite} against its records: {summary(outcomes)}. Measured: mean ± half-width of the 95% Student-t interval over seeds (a success rate or a share such as label accuracy: its 95% Wilson interval; failed seeds at their floor; cells on one private batch as one seed), then the expectation tested.", BREAKS)  # noqa: E501
    chunks = [outcomes[i:i + ROWS_PER_FLOAT]
              for i in range(0, len(outcomes), ROWS_PER_FLOAT)] or [[]]
    lines = ["% Generated by `leakbench check`; needs \\usepackage{booktabs}."]
    for n, chunk in enumerate(chunks, 1):
        first = n == 1
        more = tex(f"Claims of suite {suite} (continued, {n}/{len(chunks)}).")
        lines += ["\\begin{table}[t]", "\\centering", "\\small",
                  f"\\caption{{{caption if first else more}}}",
                  f"\\label{{tab:check-{slug}{'' if first else f':{n}'}}}",  # no slug has :
                  "\\setlength{\\tabcolsep}{3pt}",
                  "\\begin{tabular}{" + "".join(f"p{{{w}\\linewidth}}" for w in WIDTHS) + "}",
                  "\\toprule", " & ".join(HEADERS) + " \\\\", "\\midrule"]
        lines += [" & ".join(tex(c, ID_BREAKS if i == 0 else BREAKS)
                             for i, c in enumerate(_cells(o))) + " \\\\" for o in chunk]
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
    return "\n".join(lines) + "\n"
