from __future__ import annotations

import pytest

from bench.registry import (
    ARCHS,
    ATTACKS,
    DATASETS,
    DEFENSES,
    Param,
    ParamError,
    UnknownComponentError,
    validate_params,
)
from helpers import run_cli, write_plugin


def test_builtin_components_are_registered():
    assert {"dlg", "idlg"} <= set(ATTACKS.names())
    assert {"none", "prune", "noise"} <= set(DEFENSES.names())
    assert {"lenet", "mlp"} <= set(ARCHS.names())
    assert {"digits", "photos"} <= set(DATASETS.names())


def test_every_component_declares_a_description_and_valid_defaults():
    for registry in (ATTACKS, DEFENSES, ARCHS, DATASETS):
        for entry in registry.entries():
            assert entry.description, f"{registry.kind} {entry.name} has no docstring"
            defaults = {p.name: p.default for p in entry.params if not p.required}
            # defaults must pass their own validation
            assert validate_params(entry.params, defaults, entry.name) == defaults


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownComponentError, match=r"unknown attack 'dgl'.*'dlg'"):
        ATTACKS.get("dgl")


def test_param_validation_types_ranges_and_choices():
    params = (Param("ratio", float, 0.2, low=0.0, high=1.0), Param("k", int, 3),
              Param("mode", str, "a", choices=("a", "b")))
    assert validate_params(params, {"ratio": 1}, "x") == {"ratio": 1.0, "k": 3, "mode": "a"}
    assert validate_params(params, {"ratio": "1e-3"}, "x")["ratio"] == pytest.approx(1e-3)
    with pytest.raises(ParamError, match=r"x.ratio: 1.5 is above the maximum 1"):
        validate_params(params, {"ratio": 1.5}, "x")
    with pytest.raises(ParamError, match=r"x.k: expected an integer"):
        validate_params(params, {"k": 2.5}, "x")
    with pytest.raises(ParamError, match=r"x.k: expected an integer"):
        validate_params(params, {"k": True}, "x")
    with pytest.raises(ParamError, match=r"not one of"):
        validate_params(params, {"mode": "c"}, "x")
    with pytest.raises(ParamError, match=r"unknown parameter 'ratoi' \(did you mean 'ratio'"):
        validate_params(params, {"ratoi": 0.1}, "x")


def test_list_prints_every_kind_with_parameters():
    out = run_cli("list")
    assert out.returncode == 0, out.stderr
    for heading in ("attacks:", "defenses:", "archs:", "datasets:", "metrics:", "suites:"):
        assert heading in out.stdout
    assert "steps: int = 300" in out.stdout  # dlg's parameters
    assert "smoke" in out.stdout and "quick" in out.stdout
    from bench.metrics import list_metrics  # what `table --value` and `diff --metric` take

    metrics = out.stdout.split("metrics:", 1)[1].split("suites:", 1)[0]
    assert all(f"  {m.name} " in metrics for m in list_metrics())
    assert "lpips" in metrics and "needs a local weights file" in metrics


def test_entry_point_plugins_register_and_run(plugin_path, tmp_path):
    listed = run_cli("list", "attacks", extra_path=plugin_path)
    assert listed.returncode == 0, listed.stderr
    assert "boom" in listed.stdout and "sleepy" in listed.stdout
    defenses = run_cli("list", "defenses", extra_path=plugin_path)
    assert "flip" in defenses.stdout
    # without the plugin on the path, the name is unknown
    assert "boom" not in run_cli("list", "attacks").stdout


@pytest.mark.parametrize("target, problem", [
    ("leakbench_typoplugin_missing", "ModuleNotFoundError: No module named "
                                     "'leakbench_typoplugin_missing'"),
    ("leakbench_typoplugin:NoSuchClass", "AttributeError"),
])
def test_a_plugin_whose_entry_point_does_not_load_is_named_in_one_line(tmp_path, target,
                                                                       problem):
    """A typo in a third-party package's entry point gave a traceback from every command."""
    root = write_plugin(tmp_path, "leakbench_typoplugin", "x = 1\n",
                        f"[leakbench.attacks]\nmine = {target}\n")
    out = run_cli("list", "attacks", extra_path=root)
    assert out.returncode == 2, out.stderr
    last = out.stderr.strip().splitlines()
    assert len(last) == 1 and "Traceback" not in out.stderr
    assert last[0].startswith("leakbench: error: plug-in mine = ")
    assert "leakbench-typoplugin" in last[0] and "leakbench.attacks" in last[0]
    assert problem in last[0]


def test_a_plugin_that_raises_as_it_imports_is_named_with_the_line(tmp_path):
    root = write_plugin(tmp_path, "leakbench_brokenplugin", "import os\n\nundefined_name\n",
                        "[leakbench.defenses]\nmine = leakbench_brokenplugin\n")
    out = run_cli("list", "defenses", extra_path=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(
        f"NameError: name 'undefined_name' is not defined "
        f"({root / 'leakbench_brokenplugin.py'}:3)")


def test_a_plugin_that_exits_as_it_imports_is_named_not_silent(tmp_path):
    """A plug-in's ``sys.exit(3)`` at import had ended every command with status 3 and no
    word of why."""
    root = write_plugin(tmp_path, "leakbench_exitplugin", "import sys\n\nsys.exit(3)\n",
                        "[leakbench.attacks]\nmine = leakbench_exitplugin\n")
    out = run_cli("list", "attacks", extra_path=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(
        f"it called sys.exit(3) ({root / 'leakbench_exitplugin.py'}:3)")


def test_a_component_that_fails_to_import_fails_every_use_the_same_way(tmp_path, monkeypatch):
    """The registry counted itself loaded before its imports: after one failed, the next use
    found a half-filled registry and said "unknown attack" for a healthy component (a worker's
    warm-up met that first, so its cells recorded the wrong error)."""
    import sys

    from bench.registry import PluginError, Registry

    package = tmp_path / "somepkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a_good.py").write_text("")
    (package / "b_broken.py").write_text("raise ImportError('b needs a missing library')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry("thing", ("somepkg",), "leakbench.nothing-here")
    for _ in range(2):
        with pytest.raises(PluginError, match="component module somepkg.b_broken failed to "
                                              "load: ImportError: b needs a missing library"):
            registry.get("x")
    assert "somepkg.b_broken" not in sys.modules
    (package / "b_broken.py").write_text("")  # the library installed: the next use loads
    assert registry.names() == []


def test_a_description_is_the_docstrings_whole_first_paragraph():
    """``leakbench list`` printed the first line only, cutting sentences off mid-way."""
    from bench.registry import DEFENSES

    noise = DEFENSES.get("noise")
    assert noise.description == " ".join(noise.cls.__doc__.strip().split("\n\n")[0].split())
    assert noise.description.endswith(".") and "\n" not in noise.description
