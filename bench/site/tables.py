"""Tables for the site: a leaderboard :class:`~bench.leaderboard.Table` (or any rows of text)
as header cells with a sort type and body cells with a numeric sort key.

The keys are computed here, once, from the same text the markdown shows: the page's script
only compares ``data-value`` attributes, so sorting does not parse "78.95 ± 8.94" in the
browser. A column sorts as numbers when every non-blank cell is one, alone or followed by a
space, "±", "/", "%" or "–" (rank ranges by their best rank, successes "3/5" as a fraction),
and its header is not an identifier's (a cell id such as ``1e5a…`` is text); blanks ("", "n/a",
"–") sort last either way, in text columns too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

# a number, then the end, a space, "±", "/", "%" or "–" (a rank range "1–2"); not "1e5a…"
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?=$|[\s±/%–])")
_FRACTION = re.compile(r"(\d+)/(\d+)")
_BLANK = {"", "n/a", "–", "-", "—"}
IDENTIFIERS = frozenset({"Cell", "Statuses", "Suite", "Measured"})  # text, whatever they hold
# (a claim's Measured value starts with a number but runs on for a sentence: laid out as a
# number, on one line, it pushed the Verdict column off the page)


def sort_key(text: str) -> float | None:
    """The number a table cell sorts by, or None when it is not one (see the module's doc)."""
    t = text.strip()
    m = _FRACTION.fullmatch(t)
    if m:
        return int(m[1]) / int(m[2]) if int(m[2]) else None
    m = _NUMBER.match(t)
    return float(m[0].replace(",", "")) if m else None


@dataclass
class Column:
    """A header cell: its text and whether its column sorts as numbers."""

    header: str
    numeric: bool


@dataclass
class Cell:
    """A body cell: its text, numeric sort key, link target (already URL-encoded) and whether
    it is blank (sorted last)."""

    text: str
    value: str | None  # the numeric sort key as text, None for text and blank cells
    link: str | None = None
    blank: bool = False


@dataclass
class HtmlTable:
    """A table ready for the ``table`` macro: caption, note, columns and rows."""

    caption: str
    anchor: str
    columns: list[Column]
    rows: list[list[Cell]]
    note: str = ""
    figures: list[Any] = field(default_factory=list)  # set by the page that shows the table


def html_table(caption: str, anchor: str, frame: pd.DataFrame | Sequence[dict[str, Any]],
               note: str = "", links: dict[str, Sequence[str | None]] | None = None
               ) -> HtmlTable:
    """Rows of text (a frame or a list of dicts with the same keys) as an :class:`HtmlTable`;
    ``links`` maps a column to each row's link target."""
    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(list(frame))
    headers = [str(c) for c in frame.columns]
    texts = [["" if pd.isna(v) else str(v) for v in row] for row in frame.itertuples(index=False)]
    keys = [[sort_key(t) for t in row] for row in texts]
    columns = []
    for j, header in enumerate(headers):
        found = [k is not None for k in (row[j] for row in keys)]
        blank = [row[j].strip() in _BLANK for row in texts]
        numeric = header not in IDENTIFIERS and any(found) and all(
            f or b for f, b in zip(found, blank))
        columns.append(Column(header, numeric))
    rows = []
    for i, (row, row_keys) in enumerate(zip(texts, keys)):
        cells = []
        for j, (text, key) in enumerate(zip(row, row_keys)):
            link = (links or {}).get(headers[j])
            cells.append(Cell(text, repr(key) if columns[j].numeric and key is not None
                              else None, link[i] if link else None, text.strip() in _BLANK))
        rows.append(cells)
    return HtmlTable(caption, anchor, columns, rows, note)


def note_html(note: str) -> str:
    """A table note's markdown (only `code` spans) as escaped HTML."""
    return re.sub(r"`([^`]*)`", r"<code>\1</code>", html.escape(note, quote=False))


def anchor(title: str) -> str:
    """An id attribute from a title: lower case, runs of other characters as one hyphen."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "table"
