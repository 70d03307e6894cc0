"""Reading a suite file safely, before torch or any registry is imported: a built-in name or a
path resolved, a size limit before reading, text checks (not a folder, not binary, UTF-8, not
empty), the YAML's structure checked from the parser's events before any object is built (no
"billion laughs", see :mod:`bench.suite.limits`), YAML parsed with every failure turned into one
line, and each axis sized before validation expands it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.registry import short, suggest
from bench.suite.limits import MAX_SUITE_BYTES, check_axes, scan_yaml
from bench.suite.schema import SuiteError

_BASE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster
_INT, _FLOAT = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"


class _Loader(_BASE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader without YAML 1.1's base-60 numbers and octal ones: ``lr: 1:30`` was
    read as 90 (and ``1:30.5`` as 90.5), ``steps: 010`` as 8; they are text now, which a
    number parameter refuses in one line."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_INT, _FLOAT)]
    for first, resolvers in _BASE_LOADER.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_INT, re.compile(r"""^(?:[-+]?0b[0-1_]+
    |[-+]?(?:0|[1-9][0-9_]*)
    |[-+]?0x[0-9a-fA-F_]+)$""", re.X), list("-+0123456789"))
_Loader.add_implicit_resolver(_FLOAT, re.compile(r"""^(?:
    [-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
SAFE_LOADER = _Loader  # also what `leakbench rank --param` reads a VALUE with
MAX_KEY = 1024  # YAML 1.1: an implicit key on one line, at most 1024 characters
LONG_KEY = re.compile(r"[^\s:,\[\]{}]{" + str(MAX_KEY + 1) + r",}\s*:")  # a plain key too long
SUITES_DIR = Path(__file__).resolve().parent.parent / "suites"


@dataclass(frozen=True)
class SuiteDocument:
    """A suite file read and parsed within the limits: not validated yet."""

    path: Path
    raw: Any


CLAIMS_SUFFIX = ".claims"  # paper-dlg.claims.yaml: the claims of suite paper-dlg, no suite


def builtin_suites() -> dict[str, Path]:
    return {p.stem: p for p in sorted(SUITES_DIR.glob("*.yaml"))
            if not p.stem.endswith(CLAIMS_SUFFIX)}


def read_suite(name_or_path: str) -> SuiteDocument:
    """A built-in suite by name or a YAML file by path, read and parsed within the limits; a
    SuiteError naming the file otherwise. Imports nothing heavy: the CLI calls it first."""
    builtins = builtin_suites()
    try:
        path = Path(name_or_path)
        exists = path.exists() or path.is_symlink()
    except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
        exists = False
    if name_or_path in builtins:
        path = builtins[name_or_path]
    elif not exists:
        hint = suggest(name_or_path, builtins)
        raise SuiteError(f"no built-in suite or file named {short(name_or_path)}{hint}")
    raw = parse_yaml(read_suite_text(path), str(path))
    check_axes(raw, str(path))
    return SuiteDocument(path, raw)


def read_suite_text(path: Path, kind: str = "suite") -> str:
    """The text of a suite file (or another YAML file of the ``kind`` named in messages), or
    a SuiteError naming the file and what is wrong with it."""
    try:
        if path.is_dir():
            raise SuiteError(f"{path}: is a folder, not a {kind} file (give a .yaml file)")
        size = path.stat().st_size
        if not path.is_file():
            raise SuiteError(f"{path}: not a regular file")
        if size > MAX_SUITE_BYTES:
            raise SuiteError(f"{path}: {size} bytes, above the {kind} size limit of "
                             f"{MAX_SUITE_BYTES} bytes")
        with open(path, "rb") as f:
            data = f.read(MAX_SUITE_BYTES + 1)
    except OSError as e:
        raise SuiteError(f"{path}: cannot be read ({e.strerror or type(e).__name__})") from None
    if len(data) > MAX_SUITE_BYTES:
        raise SuiteError(f"{path}: above the {kind} size limit of {MAX_SUITE_BYTES} bytes")
    if b"\x00" in data:
        raise SuiteError(f"{path}: a binary file (it holds NUL bytes), not a YAML {kind} file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SuiteError(f"{path}: not UTF-8 text (byte {e.start}): a {kind} file is YAML"
                         ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        need = ("a suite needs at least datasets, archs, defenses and attacks"
                if kind == "suite" else f"a {kind} file needs content")
        raise SuiteError(f"{path}: the file is empty: {need}")
    return text


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with every failure (syntax, recursion, bad tags) one SuiteError;
    the document's structure is checked from the parser's events first."""
    scan_yaml(text, where, SAFE_LOADER)
    try:
        raw = yaml.load(text, Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise SuiteError(f"{where}: invalid YAML{at}: {_one_line(problem)}"
                         f"{_long_line_hint(text, mark)}") from None
    except RecursionError:
        raise SuiteError(f"{where}: invalid YAML: nested too deeply") from None
    except Exception as e:  # a tag's constructor on a value it cannot read: !!int _,
        # !!bool x, !!timestamp x raise IndexError, KeyError, AttributeError, ValueError...
        raise SuiteError(f"{where}: invalid YAML: a value its tag cannot hold "
                         f"({type(e).__name__}: {_one_line(str(e))})") from None
    if raw is None:
        raise SuiteError(f"{where}: the file is empty (only comments or blank lines)")
    return raw


def _long_line_hint(text: str, mark: Any) -> str:
    """PyYAML reads a key of over 1024 characters as no key at all ("could not find expected
    ':'"): where the failing line is that long, say so."""
    lines = text.splitlines()
    if mark is None or not 0 <= mark.line < len(lines) or not LONG_KEY.search(lines[mark.line]):
        return ""  # a long line of short items, say, is not this
    return (f" (line {mark.line + 1} is {len(lines[mark.line])} characters long; a YAML key "
            f"may be at most {MAX_KEY})")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]
