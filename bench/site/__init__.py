"""The static leaderboard site: ``leakbench site DIR... --out SITE``
(see :mod:`bench.site.build`)."""

from bench.site.build import build_site

__all__ = ["build_site"]
