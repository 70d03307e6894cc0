"""Markdown pipe tables: every table leakbench writes in markdown goes through here.

A ``|`` in a cell ends it: a label holding one (a path parameter, a hand-edited record) had
shifted every later cell of its row into the wrong column. Text cells and headers have every
``|`` escaped (``\\|``); a :class:`Markdown` cell (a sentence cell, whose tokens escape their
own) is written as it is.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from tabulate import tabulate


class Markdown(str):
    """Text that is markdown already (its specials escaped): a table writes it as it is."""


def _escape(value: Any) -> Any:
    """A text cell's ``|`` as ``\\|``; a :class:`Markdown` cell and a number as they are."""
    if isinstance(value, str) and not isinstance(value, Markdown):
        return value.replace("|", "\\|")
    return value


def pipe_table(data: Any, headers: Any = "keys") -> str:
    """A GitHub pipe table of ``data`` (a frame, a list of dicts or a list of rows), its text
    as given (no number parsing, no index)."""
    if isinstance(data, pd.DataFrame):
        data = data.map(_escape).rename(columns=_escape)
    elif data and isinstance(data[0], dict):
        data = [{_escape(k): _escape(v) for k, v in row.items()} for row in data]
    else:
        data = [[_escape(v) for v in row] for row in data]
    if headers != "keys":
        headers = [_escape(h) for h in headers]
    return tabulate(data, headers=headers, tablefmt="github", showindex=False,
                    disable_numparse=True)
