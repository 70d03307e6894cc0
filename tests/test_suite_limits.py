"""A suite file's structural limits (bench/suite/limits.py): any file under 1 MB is loaded or
refused with one line naming the file and the key, exit status 2; the refusal comes before torch
is imported. Speed is measured by tests/benchmarks/test_bench_suite_load.py, not asserted here."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from suite_files import HEAD, accepted, rejected

from bench.cli import BUILTIN_EXECUTORS, main
from bench.suite import SuiteError, count_cells, load_suite, parse_suite
from bench.suite.expand import (
    ATTACK_RULE_AXES,
    UTILITY_AXES,
    _masks,
    axis_match_values,
    rule_axis_values,
)
from bench.suite.limits import (
    MAX_AXIS_VALUES,
    MAX_LIST_ITEMS,
    MAX_MAPPING_KEYS,
    MAX_STRING_CHARS,
    MAX_SUITE_BYTES,
    MAX_SUITE_DEPTH,
    MAX_SUITE_NODES,
)
from helpers import ROOT, TINY_SUITE, make_suite

REJECTED = rejected()
ACCEPTED = accepted()


def run_dry(path: Path, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(["run", str(path), "--dry-run", "--out", str(path.parent / "out")])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_adversarial_files_are_refused_in_one_line(case: str, tmp_path: Path, capsys) -> None:
    data, words = REJECTED[case]
    assert len(data) < MAX_SUITE_BYTES
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    code, _, err = run_dry(path, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err[:500]
    assert lines[0].startswith(f"leakbench: error: {path}: ") and words in lines[0], lines[0]
    assert "Traceback" not in err and len(lines[0]) < 400


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_the_worst_files_within_the_limits_load(case: str, tmp_path: Path, capsys) -> None:
    data = ACCEPTED[case].encode()
    assert len(data) < MAX_SUITE_BYTES
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    code, out, err = run_dry(path, capsys)
    assert code == 0, err
    assert not [x for x in err.splitlines() if not x.startswith("leakbench: warning: ")], err
    assert "cells" in out


def test_refusals_come_before_torch_is_imported(tmp_path: Path) -> None:
    """The limits are checked without torch, the registries or the executors: a fresh
    interpreter refuses each adversarial file and still has not imported torch."""
    paths = []
    for case in ("attack_names_flood", "billion_laughs", "grid_per_entry", "deep_flow_65",
                 "long_description", "many_top_keys", "binary", "recursive_alias"):
        paths.append(tmp_path / f"{case}.yaml")
        paths[-1].write_bytes(REJECTED[case][0])
    code = ("import sys\nfrom bench.cli import main\n"
            f"for p in {[str(p) for p in paths]!r}:\n"
            "    assert main(['run', p, '--dry-run', '--executor', 'inline']) == 2\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'bench.executors', 'attacks') "
            "if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stderr.strip().splitlines()) == len(paths)


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return str(path)


def _nest(depth: int) -> str:
    """A name at ``depth`` (the root mapping is depth 0, ``attacks`` depth 1)."""
    return "[" * (depth - 1) + "dlg" + "]" * (depth - 1)


def test_limits_at_their_edge(tmp_path: Path) -> None:
    """One below the limit passes the structural checks (validation may still refuse the
    suite, for another reason); one above is refused by the limit."""
    def fails_limit(text: str, words: str) -> bool:
        try:
            load_suite(_write(tmp_path, text))
        except SuiteError as e:
            return words in str(e)
        return False

    base = HEAD + "attacks: [dlg]\n"
    depth = "nested deeper than"
    assert not fails_limit(HEAD + f"attacks: {_nest(MAX_SUITE_DEPTH)}\n", depth)
    assert fails_limit(HEAD + f"attacks: {_nest(MAX_SUITE_DEPTH + 1)}\n", depth)
    items = "a list of more than"
    seeds = ",".join(str(i) for i in range(MAX_LIST_ITEMS))
    load_suite(_write(tmp_path, base + f"seeds: [{seeds}]\n"))
    assert fails_limit(base + f"seeds: [{seeds},{MAX_LIST_ITEMS}]\n", "seeds: " + items)
    keys = "a mapping of more than"
    many = ",".join(f"k{i}: 1" for i in range(MAX_MAPPING_KEYS))
    assert not fails_limit(HEAD + f"attacks: [{{dlg: {{{many}}}}}]\n", keys)
    assert fails_limit(HEAD + f"attacks: [{{dlg: {{{many}, x: 1}}}}]\n", keys)
    chars = "characters, above the limit"
    load_suite(_write(tmp_path, base + f"description: {'x' * MAX_STRING_CHARS}\n"))
    assert fails_limit(base + f"description: {'x' * (MAX_STRING_CHARS + 1)}\n", chars)
    grid = "values per axis"
    steps = ",".join(str(i) for i in range(1, 101))
    lrs = ",".join(f"{i}.5" for i in range(1, MAX_AXIS_VALUES // 100 + 1))
    suite = load_suite(_write(tmp_path, HEAD + f"attacks: [{{dlg: {{steps: [{steps}], "
                                                f"lr: [{lrs}]}}}}]\n"))
    assert len(suite.attacks) == MAX_AXIS_VALUES
    assert fails_limit(HEAD + f"attacks: [dlg, {{dlg: {{steps: [{steps}], lr: [{lrs}]}}}}]\n",
                       "attacks: more than")
    assert fails_limit(HEAD + f"attacks: [{{dlg: {{steps: [{steps}], lr: [{lrs}, 0.25]}}}}]\n",
                       f"attacks[0].dlg: a grid of 10100 combinations, above the limit of "
                       f"{MAX_AXIS_VALUES} {grid}")


def test_aliases_count_as_copies(tmp_path: Path) -> None:
    """An alias of a mapping of n values counts n values wherever it is used; under the limit
    the aliases load like the values they repeat."""
    per_use = 5  # {dlg: {steps: 2}}: the mapping, dlg, its mapping, steps, 2
    uses = (MAX_SUITE_NODES - 20) // per_use
    text = (HEAD + "attacks: [&d {dlg: {steps: 2}}," + ",".join(["*d"] * (uses - 1)) + "]\n")
    assert len(load_suite(_write(tmp_path, text)).attacks) == 1
    text = (HEAD + "attacks: [&d {dlg: {steps: 2}}," + ",".join(["*d"] * (uses + 10)) + "]\n")
    with pytest.raises(SuiteError, match="values in the document"):
        load_suite(_write(tmp_path, text))


def test_a_mapping_is_sized_like_a_file() -> None:
    """parse_suite (a mapping from Python, not a file) checks the axes' sizes too."""
    with pytest.raises(SuiteError, match="combinations"):
        parse_suite({**TINY_SUITE, "attacks": [{"dlg": {"steps": list(range(1, 200)),
                                                        "lr": [0.5] * 100}}]})
    with pytest.raises(SuiteError, match="exclude: 1001 rules"):
        parse_suite({**TINY_SUITE, "exclude": [{"seed": i} for i in range(1001)]})


def test_seed_excludes_against_a_range_and_a_list(tmp_path: Path, capsys) -> None:
    """A rule's seed matches by value (7.0 names seed 7), against a billion seeds at once."""
    text = HEAD + "attacks: [dlg]\nseeds: 1000000000\nexclude: [{seed: 0.5}, {seed: 7.0}]\n"
    path = Path(_write(tmp_path, text))
    code, _, err = run_dry(path, capsys)
    assert code == 0 and "exclude[0] {seed: 0.5} matches no cell" in err
    assert "exclude[1]" not in err
    suite = make_suite(seeds=[3, 7], exclude=[{"seed": 7.0}, {"seed": [8]}])
    assert suite.warnings == ["exclude[1] {seed: 8} matches no cell: it does nothing"]
    assert count_cells(suite) == 2


def test_exclude_masks_match_the_rule_by_rule_definition() -> None:
    """The indexed masks equal checking every value against every rule."""
    def by_rule(suite, axes):
        masks = {}
        for axis in axes:
            if axis == "seed":
                continue
            row = []
            for value in rule_axis_values(suite)[axis]:
                have, mask = axis_match_values(axis, value), 0
                for bit, rule in enumerate(suite.exclude):
                    if set(rule) <= set(axes) and (axis not in rule or have & set(rule[axis])):
                        mask |= 1 << bit
                row.append(mask)
            masks[axis] = row
        return masks

    names = {"attack": ["dlg", "idlg", "dlg(steps=2)", "idlg(steps=3)"],
             "defense": ["none", "prune", "prune(ratio=0.5)"], "batch_size": [1, 2, 2.0, True],
             "mode": ["fedsgd", "fedavg"], "bn_mode": ["train", "eval"],
             "victim": ["init", "trained:2"], "seed": [0, 1.0],
             "arch": ["lenet"], "dataset": ["photos", "photos(size=16)"]}
    suite = make_suite(attacks=[{"dlg": {"steps": [2, 3]}}, {"idlg": {"steps": 3}}],
                       defenses=["none", {"prune": {"ratio": [0.5, 0.9]}}], batch_size=[1, 2],
                       client=[{"mode": "fedsgd"}, {"mode": "fedavg"},
                               {"mode": "fedsgd", "bn_mode": "eval"}],
                       victim=["init", "trained:2"], seeds=2, utility={"steps": 1})
    rnd = random.Random(0)
    for _ in range(200):
        suite.exclude = [{a: rnd.sample(names[a], rnd.randint(1, min(2, len(names[a]))))
                          for a in rnd.sample(sorted(names), rnd.randint(1, 3))}
                         for _ in range(rnd.randint(0, 5))]
        for axes in (ATTACK_RULE_AXES, UTILITY_AXES):
            assert _masks(suite, axes) == by_rule(suite, axes), suite.exclude


def test_an_absent_exclude_name_among_many_labels_hints_at_names(tmp_path: Path) -> None:
    attacks = ",".join(f"{{dlg: {{steps: {i}}}}}" for i in range(1, 300))
    text = HEAD + f"attacks: [{attacks}]\nexclude: [{{attack: dgl}}]\n"
    with pytest.raises(SuiteError, match=r"'dgl' is not among the suite's attacks \(did you "
                                         r"mean 'dlg'\?\)"):
        load_suite(_write(tmp_path, text))


def test_executor_names_checked_without_import_are_the_registered_ones() -> None:
    from bench.executors import EXECUTORS

    assert set(BUILTIN_EXECUTORS) <= set(EXECUTORS)


def test_the_builtin_suites_are_within_the_limits() -> None:
    from bench.suite import builtin_suites
    from bench.suite.read import read_suite

    for name in builtin_suites():
        assert read_suite(name).raw == yaml.safe_load(builtin_suites()[name].read_text())
