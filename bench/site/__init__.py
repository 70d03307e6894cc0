"""The static leaderboard site: ``leakbench site DIR... --out SITE``
(see :mod:`bench.site.build`; :mod:`bench.site.command` is its command line)."""

from __future__ import annotations

from typing import Any

__all__ = ["build_site"]


def __getattr__(name: str) -> Any:  # the build imports torch: only when it is asked for
    if name == "build_site":
        from bench.site.build import build_site
        return build_site
    raise AttributeError(name)
