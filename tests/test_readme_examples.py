"""The README's "Extending leakbench" examples are real code: each one registers, runs through
the harness, and is removed again."""

from __future__ import annotations

import re
import shutil

import pytest
import torch

from bench.cells import RunOptions
from bench.cells.trials import group_trials, members
from bench.executors import EXECUTORS, make_executor
from bench.grants import GRANTS, Grant, provide_grants
from bench.leaderboard import write_leaderboard
from bench.metrics import METRICS, get_metric
from bench.metrics.base import Metric, register_metric
from bench.registry import ATTACKS, DEFENSES
from bench.scoring import score
from bench.suite import attack_cells
from helpers import ROOT, make_suite, observe_tiny, run_record

SECTION = ROOT.joinpath("README.md").read_text().split("## Extending leakbench", 1)[1].split(
    "\n## ", 1)[0]


def example(heading: str) -> str:
    """The first python block under ``### heading``."""
    part = SECTION.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    return re.search(r"```python\n(.*?)```", part, re.S).group(1)


@pytest.fixture
def registered():
    names: list[tuple[object, str]] = []
    yield names
    for registry, name in names:
        if isinstance(registry, dict):
            registry.pop(name, None)
        else:
            registry.unregister(name)


def test_the_attack_example_runs_as_a_cell(registered):
    registered.append((ATTACKS, "zero"))
    exec(example("An attack"), {})
    rec = run_record(attack_cells(make_suite(attacks=["zero"], grant=["labels"]))[0])
    # it hands the granted labels back: scored n/a, they were given, not recovered
    assert rec["status"] == "ok" and rec["metrics"]["label_acc"] is None
    assert 0 < rec["metrics"]["psnr"] < 30


def test_the_defense_example_scales_the_update(registered):
    registered.append((DEFENSES, "halve"))
    exec(example("A defense"), {})
    (cell,) = attack_cells(make_suite(defenses=["halve"]))
    (plain,) = attack_cells(make_suite())
    obs, _ = observe_tiny(cell)
    ref, _ = observe_tiny(plain)
    for t, r in zip(obs.update.tensors, ref.update.tensors):
        assert torch.allclose(t, 0.5 * r)


def test_the_metric_example_is_scored_and_can_rule_success(registered):
    registered.append((METRICS, "mae"))
    exec(example("A metric"), {})
    x = torch.rand(2, 3, 8, 8)
    metrics = score(x, torch.tensor([0, 1]), x * 0.5, None)  # matched, then 0.25 on average
    assert 0.1 < metrics["mae"] < 0.4 and get_metric("mae").higher_is_better is False
    suite = make_suite(success={"metric": "mae", "at_most": 0.5})
    assert suite.success.holds(0.1) and not suite.success.holds(0.9)


@pytest.mark.parametrize("suite", ["quick", "text"])
def test_a_metric_installed_after_the_records_were_scored_adds_no_column(registered, tmp_path,
                                                                        suite):
    # a plug-in metric installed later has no value in the committed records: the tables
    # (attacks, defenses; images and text) stay byte-identical, with no column of n/a
    registered.append((METRICS, "mae"))
    exec(example("A metric"), {})
    registered.append((METRICS, "chars"))

    @register_metric
    class Chars(Metric):
        """The text twin: the recovered sequence's length, per matched pair."""

        name, label, modality, kind, inputs = "chars", "Chars", "text", "per_item", "tokens"
        higher_is_better, digits, order = True, 1, 199
        compute = staticmethod(lambda a, b: torch.tensor([float(len(r)) for r in b]))

    src = ROOT / "results" / suite
    shutil.copytree(src / "records", tmp_path / "records")
    assert write_leaderboard(tmp_path).read_text() == (src / "leaderboard.md").read_text()


def test_the_executor_example_runs_a_suite(registered, tmp_path):
    registered.append((EXECUTORS, "serial"))
    exec(example("An executor"), {})
    cells = attack_cells(make_suite(seeds=3, attacks=[{"dlg": {"steps": 1}}]))
    tasks = group_trials(cells, 2)  # a pass of two cells, and one alone
    assert [len(members(t)) for t in tasks] == [2, 1]
    done = list(make_executor("serial", torch.device("cpu"), 60, 1).run(tasks, RunOptions()))
    assert [c for c, _ in done] == cells
    assert all(o.record.status == "ok" and o.artifacts for _, o in done)


def test_the_executor_example_is_picked_by_the_command_line(tmp_path):
    """From a package's ``leakbench.executors`` entry point, and as a module of
    bench/executors/ (a module added there was never imported: --executor NAME refused it)."""
    import importlib

    import bench.executors
    from bench.executors.base import load_executors
    from bench.store import load_records
    from helpers import run_cli, write_plugin, write_suite

    (tmp_path / "plugin").mkdir()
    plugin = write_plugin(tmp_path / "plugin", "leakbench_serial", example("An executor"),
                          "[leakbench.executors]\nserial = leakbench_serial\n")
    suite = write_suite(tmp_path / "s.yaml", seeds=2, attacks=[{"dlg": {"steps": 1}}])
    done = run_cli("run", str(suite), "--out", str(tmp_path / "out"), "--executor", "serial",
                   "--quiet", "--no-leaderboard", extra_path=plugin)
    assert done.returncode == 0, done.stderr
    assert [r["status"] for r in load_records(tmp_path / "out")] == ["ok", "ok"]

    folder = tmp_path / "executors"
    folder.mkdir()
    (folder / "serial_module.py").write_text(example("An executor").replace(
        '"serial"', '"serial_module"'))
    path = list(bench.executors.__path__)
    bench.executors.__path__.append(str(folder))
    load_executors.cache_clear()
    try:
        make_executor("serial_module", torch.device("cpu"), 60, 1)
    finally:
        bench.executors.__path__[:] = path
        EXECUTORS.pop("serial_module", None)
        import sys

        sys.modules.pop("bench.executors.serial_module", None)
        importlib.invalidate_caches()


def test_the_grant_example_provides_its_value(registered):
    grant = eval(example("A grant"), {"Grant": Grant})
    registered.append((GRANTS, grant.name))
    GRANTS[grant.name] = grant
    (cell,) = attack_cells(make_suite())
    _, private = observe_tiny(cell)
    private.update.info["loss"] = 1.5
    assert provide_grants({"loss"}, private) == {"loss": 1.5}


def test_the_python_api_example_runs_as_a_script(tmp_path) -> None:
    """The README's "From Python" block, run as a script file (its ``__main__`` guard is what
    spawn needs there) on a one-cell suite into a temporary folder."""
    import subprocess
    import sys

    from helpers import write_suite

    part = ROOT.joinpath("README.md").read_text().split("- **From Python.**", 1)[1]
    code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    code = "\n".join(line.removeprefix("  ") for line in code.splitlines())
    suite = write_suite(tmp_path / "tiny.yaml")
    assert 'load_suite("smoke")' in code and '"/tmp/smoke-api"' in code
    code = code.replace('load_suite("smoke")', f"load_suite({str(suite)!r})").replace(
        '"/tmp/smoke-api"', repr(str(tmp_path / "out")))
    script = tmp_path / "api.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "1 ok" in done.stdout and str(tmp_path / "out" / "leaderboard.md") in done.stdout


def test_the_architecture_example_runs_as_a_cell(registered):
    from bench.registry import ARCHS

    registered.append((ARCHS, "tinymlp"))
    exec(example("An architecture"), {})
    rec = run_record(attack_cells(make_suite(archs=[{"tinymlp": {"hidden": 8}}]))[0])
    assert rec["status"] == "ok" and rec["arch_label"] == "tinymlp(hidden=8)"


def test_the_dataset_example_runs_as_a_cell(registered):
    from bench.registry import DATASETS

    registered.append((DATASETS, "blobs"))
    exec(example("A dataset"), {})
    rec = run_record(attack_cells(make_suite(datasets=[{"blobs": {"size": 8}}],
                                             archs=[{"mlp": {"hidden": 8}}]))[0])
    assert rec["status"] == "ok" and rec["input_meta"]["shape"] == [1, 8, 8]
