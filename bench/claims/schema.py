"""A claims file: what a paper says, as data that ``leakbench check`` tests against records.

A built-in suite ``S`` ships its claims as ``bench/suites/S.claims.yaml``::

    suite: paper-dlg                  # the suite whose records the claims are about
    include: [paper-idlg]             # optional: other claims files' claims, in order (a
                                      # built-in name, or a path from this file's folder)
    claims:
      - id: noise-1e-2-stops-dlg      # unique, lower case, digits and dashes
        paper: "Zhu et al., DLG, NeurIPS 2019, Fig. 8"
        sentence: "Noise of variance 1e-2 or more stops the attack."
        where: {attack: dlg, defense: ["noise(variance=0.01)", ...]}   # a filter over cells
        metric: success               # a registered per-item metric, success or risk_index
        expect: {at_most: 0.0}        # at_least | at_most | better_than (+ separated)
        reported: "fails (Fig. 8)"    # the paper's value, where it gives one

``where`` takes the ``leakbench table --where`` columns; a value is a cell's label or a
registered name, a list means any of them. ``better_than`` is a second filter, laid over
``where`` key by key: the claim holds when the cells of ``where`` score better on the metric
(its direction) than those of ``better_than``; with ``separated: true`` only when the 95%
interval of their paired per-batch difference excludes 0 (or, where the two sides share no
private batches, when their intervals do not overlap). Files are read within the suite
files' limits; a problem is one line naming the file and the key (:class:`ClaimsError`, exit
status 2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.leaderboard.pivot import WHERE
from bench.leaderboard.where import split_outside_parentheses
from bench.registry import LeakbenchError, has_control, number_from_text, short, suggest
from bench.suite.load import SUITE_NAME
from bench.suite.read import CLAIMS_SUFFIX, SUITES_DIR, parse_yaml, read_suite_text

SUCCESS, RISK_INDEX = "success", "risk_index"
"""Claim metrics beside the registered per-item ones: a seed's success (1 or 0, a failed seed
0) and R-GAP's rank-analysis risk index of the cell's architecture."""
BOUNDS = ("at_least", "at_most")
EXPECT_KEYS = (*BOUNDS, "better_than", "separated")
CLAIM_KEYS = ("id", "paper", "sentence", "where", "metric", "expect", "reported", "note")
REQUIRED = ("id", "paper", "sentence", "where", "metric", "expect")
FILE_KEYS = ("suite", "description", "include", "claims")
ID = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


class ClaimsError(LeakbenchError):
    """A claims file that cannot be used: one line, exit status 2."""


@dataclass(frozen=True)
class Claim:
    """One claim of a paper, with the cells it is about and what it expects of them."""

    id: str
    paper: str
    sentence: str
    where: dict[str, list[str]]
    metric: str
    at_least: float | None = None
    at_most: float | None = None
    better_than: dict[str, list[str]] | None = None
    separated: bool = False
    reported: str = ""
    note: str = ""

    def expectation(self) -> str:
        """The expectation in words: ``mean psnr ≥ 20``, ``psnr above defense=none``."""
        what = "share of successes" if self.metric == SUCCESS else f"mean {self.metric}"
        if self.at_least is not None:
            return f"{what} ≥ {self.at_least:g}"
        if self.at_most is not None:
            return f"{what} ≤ {self.at_most:g}"
        other = ", ".join(f"{k}={'|'.join(v)}" for k, v in (self.better_than or {}).items())
        how = " (separated at 95%)" if self.separated else ""
        return f"{what} better than with {other}{how}"


@dataclass(frozen=True)
class ClaimsFile:
    path: Path
    suite: str
    description: str
    claims: list[Claim] = field(default_factory=list)
    # its suite; else, holding only included claims, the suites its included files are about
    about: tuple[str, ...] = ()


def claims_path(name_or_path: str) -> Path:
    """A built-in claims file by suite name (``paper-dlg``) or a path."""
    builtin = SUITES_DIR / f"{name_or_path}{CLAIMS_SUFFIX}.yaml"
    if builtin.is_file():
        return builtin
    path = Path(name_or_path)
    if path.exists():
        return path
    names = sorted(p.name[: -len(CLAIMS_SUFFIX + ".yaml")]
                   for p in SUITES_DIR.glob(f"*{CLAIMS_SUFFIX}.yaml"))
    raise ClaimsError(f"no built-in claims file or file named {short(name_or_path)}"
                      f"{suggest(name_or_path, names)}; built-in: {', '.join(names)}")


def _included(name: str, including: Path) -> str:
    """An ``include`` entry: a built-in name, an absolute path, or a relative path read from
    the including file's folder (never from the working directory)."""
    if (SUITES_DIR / f"{name}{CLAIMS_SUFFIX}.yaml").is_file() or Path(name).is_absolute():
        return name
    beside = including.parent / name
    if not beside.exists():
        raise ClaimsError(f"no built-in claims file named {short(name)}, and no file {beside}")
    return str(beside)


def load_claims(name_or_path: str, _seen: tuple[Path, ...] = (),
                _loaded: dict[Path, ClaimsFile] | None = None) -> ClaimsFile:
    """The validated claims of a file (its ``include`` first), or a ClaimsError. Each file is
    read once per call, however often it is included (a chain of diamonds read 2^depth)."""
    path = claims_path(name_or_path)
    key = path.resolve()
    if key in _seen:
        raise ClaimsError(f"{path}: include: the file includes itself")
    loaded = {} if _loaded is None else _loaded
    if key in loaded:
        return loaded[key]
    try:
        raw = parse_yaml(read_suite_text(path, "claims"), str(path))
    except LeakbenchError as e:
        raise ClaimsError(str(e)) from None
    where = str(path)
    if not isinstance(raw, dict):
        raise ClaimsError(f"{where}: expected a mapping with a claims list, got {short(raw)}")
    _known(raw, FILE_KEYS, where)
    claims: list[Claim] = []
    about: list[str] = []
    for i, name in enumerate(_list(raw.get("include", []), f"{where}: include")):
        if not isinstance(name, str):
            raise ClaimsError(f"{where}: include[{i}]: expected a claims file name, "
                              f"got {short(name)}")
        try:
            included = load_claims(_included(name, path), (*_seen, key), loaded)
        except ClaimsError as e:
            raise ClaimsError(f"{where}: include[{i}]: {e}") from None
        # a file reached twice (a diamond)
        claims += [c for c in included.claims if c not in claims]
        about += [a for a in included.about if a not in about]
    items = _list(raw.get("claims", []), f"{where}: claims")
    claims += [_claim(item, f"{where}: claims[{i}]") for i, item in enumerate(items)]
    if not claims:
        raise ClaimsError(f"{where}: no claims (give a claims list or an include)")
    seen: set[str] = set()
    for c in claims:
        if c.id in seen:
            raise ClaimsError(f"{where}: claim id {c.id!r} is given twice")
        seen.add(c.id)
    suite = raw.get("suite", "")
    if suite != "" and not (isinstance(suite, str) and SUITE_NAME.fullmatch(suite)):
        raise ClaimsError(f"{where}: suite: expected a suite name (letters, digits, '.', '_', "
                          f"'+', '-'), got {short(suite)}")
    description = _text(raw.get("description", ""), f"{where}: description", required=False)
    # a file naming no suite with claims of its own is about whatever records it is given
    own = bool(items)
    loaded[key] = ClaimsFile(path, suite, description, claims,
                             (suite,) if suite else () if own else tuple(about))
    return loaded[key]


def _claim(item: Any, where: str) -> Claim:
    if not isinstance(item, dict):
        raise ClaimsError(f"{where}: expected a mapping, got {short(item)}")
    _known(item, CLAIM_KEYS, where)
    for key in REQUIRED:
        if key not in item:
            raise ClaimsError(f"{where}: missing {key!r}")
    cid = item["id"]
    if not isinstance(cid, str) or not ID.fullmatch(cid):
        raise ClaimsError(f"{where}.id: expected lower-case letters, digits and dashes "
                          f"(up to 64), got {short(cid)}")
    where = f"{where} ({cid})"
    texts = {k: _text(item.get(k, ""), f"{where}.{k}", required=k in REQUIRED)
             for k in ("paper", "sentence", "reported", "note")}
    metric = _metric(item["metric"], f"{where}.metric")
    expect = item["expect"]
    if not isinstance(expect, dict) or not expect:
        raise ClaimsError(f"{where}.expect: expected a mapping such as {{at_least: 20}}, "
                          f"got {short(expect)}")
    _known(expect, EXPECT_KEYS, f"{where}.expect")
    given = [k for k in (*BOUNDS, "better_than") if k in expect]
    if len(given) != 1:
        raise ClaimsError(f"{where}.expect: give exactly one of at_least, at_most, "
                          f"better_than (got {', '.join(given) or 'none'})")
    bounds = {k: _number(expect[k], f"{where}.expect.{k}") for k in BOUNDS if k in expect}
    low, high = _value_range(metric)
    for k, bound in bounds.items():  # past the metric's range: never holds, or always does
        if metric == SUCCESS and not low <= bound <= high:
            raise ClaimsError(f"{where}.expect.{k}: a share of successes lies between 0 and "
                              f"1, got {bound:g}")
        if not low <= bound <= high or bound == (low if k == "at_least" else high):
            raise ClaimsError(f"{where}.expect.{k}: {bound:g} is not a bound some results "
                              f"meet and others not: {metric} takes values in [{low:g}, "
                              f"{high:g}]")
    separated = expect.get("separated", False)
    if not isinstance(separated, bool):
        raise ClaimsError(f"{where}.expect.separated: expected true or false, "
                          f"got {short(separated)}")
    if separated and "better_than" not in expect:
        raise ClaimsError(f"{where}.expect.separated: only an ordering (better_than) has it")
    better = (_filter(expect["better_than"], f"{where}.expect.better_than")
              if "better_than" in expect else None)
    cells = _filter(item["where"], f"{where}.where")
    if better is not None and {**cells, **better} == cells:  # the cells against themselves
        raise ClaimsError(f"{where}.expect.better_than: changes nothing of where, so it "
                          "compares the cells with themselves")
    for key, values in (better or {}).items():  # two sides sharing cells compare nothing
        if key not in cells:
            raise ClaimsError(f"{where}.expect.better_than: where does not fix {key}, so its "
                              f"side holds the {key}={'|'.join(values)} cells too; give "
                              f"where a {key}")
        shared = [v for v in values if any(_same_cells(v, w) for w in cells[key])]
        if shared:
            raise ClaimsError(f"{where}.expect.better_than: {key}={'|'.join(shared)} is on "
                              "both sides (where has it too)")
    return Claim(cid, texts["paper"], texts["sentence"], cells,
                 metric, bounds.get("at_least"), bounds.get("at_most"), better, separated,
                 texts["reported"], texts["note"])


def _filter(value: Any, where: str) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not value:
        raise ClaimsError(f"{where}: expected a mapping of columns to values, "
                          f"got {short(value)}")
    out: dict[str, list[str]] = {}
    for key, v in value.items():
        if key not in WHERE:
            raise ClaimsError(f"{where}: unknown column {short(key)}{suggest(str(key), WHERE)}; "
                              f"expected one of {', '.join(WHERE)}")
        values = v if isinstance(v, list) else [v]
        if not values:
            raise ClaimsError(f"{where}.{key}: an empty list matches nothing")
        for x in values:
            if isinstance(x, bool) or not isinstance(x, (str, int, float)):
                raise ClaimsError(f"{where}.{key}: expected a label, a name or a number, "
                                  f"got {short(x)}")
            problem = _value_problem(key, x)
            if problem:  # it matched no cell: the claim read "not run", check exited 0
                raise ClaimsError(f"{where}.{key}: {problem}")
        out[key] = [str(x) for x in values]
    return out


def _value_problem(key: str, value: Any) -> str | None:
    """Why a ``where`` value can match no cell: a seed or batch size that is not an integer
    (cells' are, and ``1.0`` is not the label ``1``), or ``a|b``, which ``table --where`` reads
    as either and no label holds (a ``|`` inside a label's parentheses is the label's). Names
    are not checked here: records may come from a machine with plug-ins this one lacks
    (``check`` hints at values that match nothing)."""
    text = str(value)
    if has_control(text):  # no label holds one (records refuse them), and check.md's table
        return f"{short(value)}: a control character (a line break?) no label holds"  # broke
    either = split_outside_parentheses(text, "|")  # a label's own '|' stays in it
    if len(either) > 1:  # table --where's "either"; here the whole text was one label
        return f"{short(value)}: a claim gives either as a list, [{', '.join(either)}]"
    if key in ("seed", "batch_size") and not (text.isascii() and text.isdigit()
                                              and str(int(text)) == text):  # "01": no cell's
        return f"expected a non-negative integer as cells have it, got {short(value)}"
    return None


def _metric(value: Any, where: str) -> str:
    from bench.leaderboard.pivot import table_metrics

    names = [m.name for m in table_metrics()] + [SUCCESS, RISK_INDEX]
    if value not in names:
        raise ClaimsError(f"{where}: unknown metric {short(value)}{suggest(str(value), names)}; "
                          f"expected one of {', '.join(names)}")
    return str(value)


def _value_range(metric: str) -> tuple[float, float]:
    """The values a claim's metric takes: a share of successes and the risk index in [0, 1],
    a registered metric in its declared bounds (PSNR [0, 100], SSIM [-1, 1], …)."""
    if metric in (SUCCESS, RISK_INDEX):
        return 0.0, 1.0
    from bench.metrics import get_metric

    return get_metric(metric).bounds()


def _number(value: Any, where: str) -> float:
    if isinstance(value, str) and number_from_text(value) is not None:
        value = number_from_text(value)  # YAML 1.1 leaves 1e-3 as text; suites take it too
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value \
            or value in (float("inf"), float("-inf")):
        raise ClaimsError(f"{where}: expected a finite number, got {short(value)}")
    try:
        return float(value)
    except OverflowError:  # an integer past the float range
        raise ClaimsError(f"{where}: {short(value)} is beyond a float's range") from None


def _text(value: Any, where: str, required: bool) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = f"{value:g}"
        except OverflowError:  # an integer past the float range
            raise ClaimsError(f"{where}: {short(value)} is beyond a float's range") from None
    if not isinstance(value, str) or (required and not value.strip()):
        raise ClaimsError(f"{where}: expected {'non-empty ' if required else ''}text, "
                          f"got {short(value)}")
    return " ".join(value.split())


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ClaimsError(f"{where}: expected a list, got {short(value)}")
    return value


def _known(mapping: dict[Any, Any], keys: tuple[str, ...], where: str) -> None:
    for key in mapping:
        if key not in keys:
            raise ClaimsError(f"{where}: unknown key {short(key)}{suggest(str(key), keys)}; "
                              f"expected {', '.join(keys)}")


def _same_cells(a: str, b: str) -> bool:
    """Whether two filter values can match one cell: equal, or a registered name and a label
    of it (``noise`` matches ``noise(scale=0.1)``: a filter takes either)."""
    return a == b or ("(" not in a and b.split("(")[0] == a) or \
        ("(" not in b and a.split("(")[0] == b)
