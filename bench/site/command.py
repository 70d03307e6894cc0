"""``leakbench site DIR... --out SITE``: the command line of the static site."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_site_parser(sub: Any) -> None:
    s = sub.add_parser("site", help="write a static HTML site of results folders")
    s.add_argument("dirs", nargs="+", metavar="DIR", help="results folders, one suite each")
    s.add_argument("--out", required=True, metavar="SITE", help="folder to write (replaced)")
    s.set_defaults(func=cmd_site)


def cmd_site(args: argparse.Namespace) -> int:
    from bench.site.build import build_site

    print(build_site([Path(d) for d in args.dirs], Path(args.out)))
    return 0
