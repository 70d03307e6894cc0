"""Pieces of the command line that keep torch out of its import path: the ``--executor``
choices checked without importing the executors, and the collector paused while a large suite
loads."""

from __future__ import annotations

import argparse
import contextlib
import gc
import re
import signal
import threading
from collections.abc import Iterator

from bench.registry import suggest
from bench.stops import forget_sigterm, note_sigterm


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """The objects alive now (torch's and the registries': some 400 000) left out of the
    collections while a suite is validated or expanded, which allocate many objects and would
    otherwise scan them all again and again (about half of a large suite's load time)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


BUILTIN_EXECUTORS = ("inline", "process", "ray")
"""``--executor``'s built-in names, checked without importing the executors (and torch)."""


class ExecutorChoices:
    """``--executor``'s choices: a built-in name is accepted as is; another (a registered
    plugin's), the help and the error's list import the executors."""

    def __contains__(self, name: object) -> bool:
        return name in BUILTIN_EXECUTORS or name in self._registered()

    def __iter__(self) -> Iterator[str]:
        return iter(self._registered())

    @staticmethod
    def _registered() -> list[str]:
        from bench.executors import EXECUTORS
        from bench.executors.base import load_executors

        load_executors()  # a module added to bench/executors/, a package's entry point
        return sorted(EXECUTORS)


# Path arguments for which an empty value named the working directory (site --out '' built
# beside it and renamed over it); refused for every command at once. (run --out '', export
# and table --output '' mean their defaults, as they always did; report --fid-weights '' had
# meant no weights, losing the FID columns of a script's unset variable in silence.)
POSITIONAL_PATHS = ("dir", "dirs", "a", "b", "suite")
OPTION_PATHS = ("against", "against_records", "attacks", "fid_weights", "inception", "claims")
OUT_IS_A_PATH = ("site", "merge", "prior-curve")  # run's --out '' is results/<suite>
BLANK_MEANS_DEFAULT = ("out", "output")  # '' is the default; ' ' named a file or folder ' '


def empty_path_problem(args: argparse.Namespace) -> str | None:
    """The first path argument given as empty text, in one line, or None."""
    may_be_empty = () if args.command in OUT_IS_A_PATH else BLANK_MEANS_DEFAULT
    for name in (*POSITIONAL_PATHS, *OPTION_PATHS, *BLANK_MEANS_DEFAULT):
        value = getattr(args, name, None)
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and not v.strip() and (v or name not in may_be_empty):
                positional = name in POSITIONAL_PATHS or (
                    name == "out" and args.command == "merge")
                flag = name.upper() if positional else f"--{name.replace('_', '-')}"
                return f"{args.command}: {flag}: expected a path, got {v!r}"
    return None


def ignored_run_flags(args: argparse.Namespace) -> list[str]:
    """Warnings for ``run`` flags that change nothing in this run: ``--verbose`` without
    ``--dry-run``, and what a dry run neither shows nor writes."""
    if not args.dry_run:
        return (["--verbose: lists every cell of a --dry-run; without one it is ignored"]
                if args.verbose else [])
    return [f"{flag}: a --dry-run {what}; ignored" for flag, on, what in (
        ("--quiet", args.quiet, "draws no progress bar"),
        ("--no-leaderboard", args.no_leaderboard, "writes no leaderboard")) if on]


_INVALID_CHOICE = re.compile(r"invalid choice: '?(?P<name>.*?)'? \(choose from (?P<choices>.*)\)$")


class Parser(argparse.ArgumentParser):
    """leakbench's argument parser: its refusals are one line and exit status 2."""

    def error(self, message: str) -> None:  # one line, status 2
        """argparse's message, with the close choices of an invalid one named
        (``leakbench list suite`` → "did you mean 'suites'?") as every registry names them."""
        wrong = _INVALID_CHOICE.search(message)
        if wrong and "mean" not in message:  # Python 3.14's suggest_on_error words its own
            choices = [c.strip().strip("'\"") for c in wrong["choices"].split(",")]
            close = suggest(wrong["name"], choices)
            if close:
                message = (f"{message[:wrong.start()]}invalid choice: {wrong['name']!r}{close}; "
                           f"expected one of {', '.join(choices)}")
        self.exit(2, f"leakbench: error: {message}\n")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` while the block runs (in the main thread only,
    where Python delivers signals); the previous handler is restored after it."""
    forget_sigterm()  # a SIGTERM of an earlier block in this process says nothing of this one
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:  # an inherited ignore stays
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise note_sigterm()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:  # None: a handler set outside Python, restored as the default
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
