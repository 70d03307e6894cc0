"""Property-based: random YAML documents and random values for every declared parameter give a
valid suite or one SuiteError line (exit 2 from the CLI), never a traceback, never a hang."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.cli import main
from bench.registry import REGISTRIES, LeakbenchError, validate_params
from bench.suite import SuiteError, count_cells, load_suite, parse_suite
from bench.suite.schema import SUITE_KEYS
from helpers import TINY_SUITE

FAST = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False),
                    st.text(max_size=12),
                    st.sampled_from(["dlg", "idlg", "none", "lenet", "photos", "digits",
                                     "prune", "labels", "init", "trained:3", "fedavg", ".nan"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), scalars),
                                                  inner, max_size=4)), max_leaves=12)
key_names = st.sampled_from(sorted(SUITE_KEYS))


def check(raw: object) -> None:
    """A suite, or one SuiteError line."""
    try:
        suite = parse_suite(raw, source="fuzz")
    except SuiteError as e:
        assert "\n" not in str(e) and str(e)
        return
    assert count_cells(suite) >= 1


@FAST
@given(st.dictionaries(key_names, values, max_size=6))
def test_random_documents_over_the_suite_keys(raw: dict) -> None:
    check(raw)


@FAST
@given(st.sampled_from(sorted(SUITE_KEYS)), values)
def test_one_random_key_on_a_valid_suite(key: str, value: object) -> None:
    check({**TINY_SUITE, key: value})


@FAST
@given(values)
def test_random_documents(raw: object) -> None:
    check(raw)


def _declared() -> list[tuple[str, object]]:
    return [(f"{kind}.{entry.name}", entry) for kind, reg in REGISTRIES.items()
            for entry in reg.entries()]


@FAST
@given(st.data())
def test_random_values_for_every_declared_parameter(data) -> None:
    where, entry = data.draw(st.sampled_from(_declared()))
    if not entry.params:
        return
    p = data.draw(st.sampled_from(entry.params))
    value = data.draw(values)
    try:
        out = validate_params(entry.params, {p.name: value}, where)
    except LeakbenchError as e:
        assert "\n" not in str(e)
        return
    v = out[p.name]
    assert v is None or isinstance(v, p.type)
    if isinstance(v, float):
        assert math.isfinite(v)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode),
                 st.dictionaries(key_names, values, max_size=5).map(
                     lambda d: yaml.safe_dump(d).encode())))
def test_random_files_through_the_cli(tmp_path: Path, capsys, data: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    code = main(["run", str(path), "--dry-run", "--out", str(tmp_path / "o"), "--max-cells",
                 "50"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [x for x in err.splitlines() if x.startswith("leakbench: error:")]
    assert (code, len(errors)) in ((0, 0), (2, 1)), err
    if code == 2:
        assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("text", ["&a [*a]", "a: &a {b: *a}", "[" * 200 + "]" * 200,
                                  "!!binary AAAA", "!!set {a, b}", "? [a, b]\n: c",
                                  "a: !!float nan", "a: !!int 0x1F", "\t- x"])
def test_odd_yaml(tmp_path: Path, text: str) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    with pytest.raises(SuiteError) as e:
        load_suite(str(path))
    assert "\n" not in str(e.value)
