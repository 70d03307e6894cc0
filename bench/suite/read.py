"""Reading a suite file safely: a size limit before reading, text checks (not a folder, not
binary, UTF-8, not empty), YAML parsed with every failure turned into one line, and a bound on
the document's size once YAML aliases are expanded (no "billion laughs")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.suite.schema import SuiteError

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster
MAX_SUITE_BYTES = 1_000_000
"""A suite file larger than this is refused before it is read."""
MAX_SUITE_NODES = 1_000_000
"""Values in a suite document, counting each use of a YAML alias as a copy."""
MAX_SUITE_DEPTH = 64
"""Nesting depth of a suite document (suites need fewer than ten levels)."""


def read_suite_text(path: Path) -> str:
    """The text of a suite file, or a SuiteError naming the file and what is wrong with it."""
    try:
        if path.is_dir():
            raise SuiteError(f"{path}: is a folder, not a suite file (give a .yaml file)")
        size = path.stat().st_size
        if not path.is_file():
            raise SuiteError(f"{path}: not a regular file")
        if size > MAX_SUITE_BYTES:
            raise SuiteError(f"{path}: {size} bytes, above the suite size limit of "
                             f"{MAX_SUITE_BYTES} bytes")
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: above the suite size limit of {MAX_SUITE_BYTES} bytes")
    if b"\x00" in data:
        raise SuiteError(f"{path}: a binary file (it holds NUL bytes), not a YAML suite")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{path}: not UTF-8 text (byte {e.start}): a suite is a YAML file"
                         ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise SuiteError(f"{path}: the file is empty: a suite needs at least datasets, archs, "
                         "defenses and attacks")
    return text


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure (syntax, recursion, bad tags) one SuiteError."""
    try:
        raw = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SuiteError(f"{where}: invalid YAML{at}: {_one_line(problem)}") from None
    except RecursionError:
        raise SuiteError(f"{where}: invalid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError, MemoryError) as e:  # e.g. a bad !!timestamp
        raise SuiteError(f"{where}: invalid YAML: {_one_line(str(e)) or type(e).__name__}"
                         ) from None
    if raw is None:
        raise SuiteError(f"{where}: the file is empty (only comments or blank lines)")
    check_document(raw, where)
    return raw


def check_document(raw: Any, where: str) -> None:
    """Refuse documents too big once aliases are expanded, too deep, or recursive."""
    nodes = 1
    stack: list[tuple[Any, int, tuple[int, ...]]] = [(raw, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_SUITE_DEPTH:
            raise SuiteError(f"{where}: nested deeper than {MAX_SUITE_DEPTH} levels")
        if not isinstance(value, (dict, list, tuple, set, frozenset)):
            continue
        if id(value) in path:
            raise SuiteError(f"{where}: a YAML alias refers to itself (a recursive structure)")
        nodes += 2 * len(value) if isinstance(value, dict) else len(value)
        if nodes > MAX_SUITE_NODES:
            raise SuiteError(f"{where}: more than {MAX_SUITE_NODES} values once YAML aliases "
                             "are expanded")
        inner = (*path, id(value))
        children = [*value.keys(), *value.values()] if isinstance(value, dict) else value
        stack.extend((c, depth + 1, inner) for c in children)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]
