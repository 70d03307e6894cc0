"""Markdown pipe tables: every table leakbench writes in markdown goes through here.

A ``|`` in a cell ends it: a label holding one (a path parameter, a hand-edited record) had
shifted every later cell of its row into the wrong column. Text cells and headers have it
escaped (``\\|``), unless escaped already: a sentence cell
(:class:`~bench.leaderboard.text_tables.Tokens`) is its own markdown.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
from tabulate import tabulate


def _escape(value: Any) -> Any:
    """``|`` as ``\\|``, where it is not escaped already (a sentence cell's markdown is)."""
    return _PIPE.sub(r"\\|", value) if isinstance(value, str) else value


_PIPE = re.compile(r"(?<!\\)\|")


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
