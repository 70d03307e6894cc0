"""``leakbench diff A B``: its options, and the command (:func:`bench.diff.diff`, reported by
:mod:`bench.diff_report`); the comparison is imported when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_diff_parser(sub: Any) -> None:
    s = sub.add_parser("diff", help="compare results folder B against A row by row; exit 1 "
                                    "on a regression or a cell that stopped finishing")
    s.add_argument("a", metavar="A", help="reference results folder")
    s.add_argument("b", metavar="B", help="results folder compared with A")
    s.add_argument("--metric", action="append", help="registered per-item metric compared "
                   "(repeatable or a,b; default: each row's leaderboard metric, psnr for "
                   "images, rouge1 for text)")
    s.add_argument("--format", default="markdown", choices=["markdown", "csv"])
    s.add_argument("--common", action="store_true", help="compare only the cells found in "
                   "both folders (a run of some of a suite's cells against all its records)")
    s.set_defaults(func=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    from bench.diff import diff
    from bench.diff_report import render

    result = diff(Path(args.a), Path(args.b), args.metric, args.common)
    sys.stdout.write(render(result, args.format))
    return 1 if result.regressed else 0
