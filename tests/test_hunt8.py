"""Bad input found in 2026-12-05's eighth pass (closing the last notes' left-alone items):
each is one line naming the problem and exit status 2, or a hint where a user went wrong."""

from __future__ import annotations

import os

import pytest

from helpers import TINY_SUITE, one_line, write_suite


def _text_suite(tmp_path, root):
    return write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "archs": ["transformer"],
                                              "attacks": ["tag"],
                                              "datasets": [{"textfolder": {"root": str(root)}}]})


@pytest.mark.parametrize("what", ["folder", "fifo"])
def test_a_text_folder_entry_that_is_no_file_names_the_suite_and_the_dataset(tmp_path, capsys,
                                                                             what):
    """A folder named ``notes.txt`` gave ``leakbench: error: …/notes.txt: Is a directory``:
    no suite file, no dataset (every other data error names both)."""
    root = tmp_path / "text"
    root.mkdir()
    (root / "a.txt").write_text("The quick brown fox jumps over the lazy dog near the bank.")
    odd = root / "notes.txt"
    odd.mkdir() if what == "folder" else os.mkfifo(odd)
    line = one_line(capsys, "run", str(_text_suite(tmp_path, root)), "--out",
                    str(tmp_path / "o"), "--dry-run")
    assert line.startswith(f"leakbench: error: {tmp_path / 's.yaml'}: textfolder: {odd}: ")


def test_run_given_a_claims_file_says_what_it_is_and_what_to_run(tmp_path, capsys):
    """``leakbench run bench/suites/paper-dlg.claims.yaml`` said "unknown suite key 'claims'
    (did you mean 'victim', 'client'?)": no hint that claims are checked, not run."""
    from helpers import ROOT

    claims = ROOT / "bench" / "suites" / "paper-dlg.claims.yaml"
    line = one_line(capsys, "run", str(claims), "--out", str(tmp_path / "o"), "--dry-run")
    assert line == (f"leakbench: error: {claims}: a claims file (of suite 'paper-dlg'), not a "
                    "suite: run the suite, then 'leakbench check DIR --claims FILE' tests them")
    assert not (tmp_path / "o").exists()


def _run_tiny(tmp_path, **overrides):
    from bench.runner import run_suite
    from helpers import make_suite

    return run_suite(make_suite(**{"seeds": 1, **overrides}), tmp_path, jobs=0, device="cpu",
                     progress=False)


def test_a_metric_value_outside_its_declared_range_is_an_error_record_not_quarantined(
        tmp_path, capsys):
    """A plug-in metric whose value left its declared [best, worst]: the run wrote the record,
    its own next read quarantined it ("damaged record"), and the run ended "no records" (exit
    2); every later run did the same. The cell now ends in an error record naming the value."""
    from bench.metrics.base import METRICS, Metric, register_metric
    from bench.metrics.mse import mse_per_pair
    from bench.store import load_records

    class Narrow(Metric):
        """MSE declared to stay below 1e-12: any real reconstruction leaves that range."""

        name, label, modality, kind = "narrow_mse", "Narrow", "image", "per_item"
        higher_is_better, digits, order, best, worst = False, 4, 999, 0.0, 1e-12
        compute = staticmethod(mse_per_pair)

    register_metric(Narrow)
    try:
        summary = _run_tiny(tmp_path)
        (record,) = load_records(tmp_path)
    finally:
        METRICS.unregister("narrow_mse")
    err = capsys.readouterr().err
    assert "damaged" not in err and not (tmp_path / "records" / "quarantine").exists()
    assert summary.counts == {"error": 1}
    assert record["status"] == "error" and record["metrics"] is None
    assert "metric 'narrow_mse' is " in record["error"] and "outside its range [0, 1e-12]: " \
        "the record check would refuse the cell's record" in record["error"]


def _digits_error(tmp_path, monkeypatch, images=lambda x: x, labels=lambda y: y) -> str:
    """The error of a one-cell run on digits whose ``load()`` gives ``images(x)`` and
    ``labels(y)`` (a plug-in dataset's mistakes, played on a built-in one)."""
    from torch.utils.data import TensorDataset

    from bench.datasets.digits import Digits
    from bench.store import load_records

    load = Digits.load

    def altered(self, split):
        x, y = load(self, split).tensors
        return TensorDataset(images(x), labels(y))

    monkeypatch.setattr(Digits, "load", altered)
    _run_tiny(tmp_path, datasets=[{"digits": {"size": 8}}])
    (record,) = load_records(tmp_path)
    assert record["status"] == "error"
    return record["error"]


def test_a_dataset_whose_pixels_are_not_in_the_unit_box_is_an_error_naming_it(tmp_path,
                                                                             monkeypatch):
    """Images in [0, 255] (a plug-in that forgot /255) scored PSNR −44.9 dB and MSE 31 120,
    outside their ranges: the record was quarantined by the run that wrote it."""
    error = _digits_error(tmp_path, monkeypatch, images=lambda x: x * 255)
    assert "the dataset's images lie outside [0, 1] (min 0, max 255): a dataset's load() " \
           "returns pixels in [0, 1]" in error


def test_a_dataset_label_beyond_its_classes_is_an_error_naming_it(tmp_path, monkeypatch):
    error = _digits_error(tmp_path, monkeypatch, labels=lambda y: y + 10)
    assert "the dataset's labels lie outside 0…9 (min 1" in error
    assert "its DatasetMeta says 10 classes" in error


def test_a_defense_whose_observed_batch_raises_is_one_line_naming_it(tmp_path, capsys):
    from bench.contracts import Defense
    from bench.registry import DEFENSES, register_defense

    @register_defense("badbatch")
    class BadBatch(Defense):
        """Its observed batch raises."""

        def observed_batch(self, batch_size):
            raise ZeroDivisionError("division by zero")

    try:
        suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "defenses": ["badbatch"]})
        line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--dry-run")
    finally:
        DEFENSES.unregister("badbatch")
    assert line == (f"leakbench: error: {suite}: defense badbatch raised ZeroDivisionError: "
                    "division by zero while the suite was checked (its constructor or its "
                    "compatibility check)")


@pytest.mark.parametrize("kind", ["attack", "defense", "arch"])
def test_a_component_constructor_that_raises_is_one_line_naming_it(kind, tmp_path, capsys):
    """A plug-in whose constructor raised (for one grid point) crashed ``run`` and
    ``run --dry-run`` with a traceback, exit 1, while the suite's cells were checked."""
    from bench.contracts import Arch, Attack, Defense
    from bench.registry import REGISTRIES, Param, register_arch, register_attack, register_defense

    base = {"attack": Attack, "defense": Defense, "arch": Arch}[kind]
    register = {"attack": register_attack, "defense": register_defense,
                "arch": register_arch}[kind]

    class Exploding(base):
        """Refuses ``mode: init`` by raising, not by a declared choice."""

        params = (Param("mode", str, "ok"),)

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if self.mode == "init":
                raise RuntimeError("constructor exploded")

    register("exploding")(Exploding)
    axis = {"attack": "attacks", "defense": "defenses", "arch": "archs"}[kind]
    try:
        suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, axis: [
            {"exploding": {"mode": ["ok", "init"]}}]})
        for extra in ([], ["--dry-run"]):
            line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), *extra)
            assert line == (f"leakbench: error: {suite}: {kind} exploding(mode=init) raised "
                            "RuntimeError: constructor exploded while the suite was checked "
                            "(its constructor or its compatibility check)")
    finally:
        REGISTRIES[axis].unregister("exploding")
    assert not (tmp_path / "o" / "records").exists()


def test_rank_of_an_arch_whose_constructor_raises_is_one_line(capsys):
    from bench.contracts import Arch
    from bench.registry import ARCHS, Param, register_arch

    @register_arch("exploding_rank")
    class ExplodingRank(Arch):
        """Raises for ``mode: init``."""

        params = (Param("mode", str, "ok"),)

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            if self.mode == "init":
                raise RuntimeError("constructor exploded")

    try:
        line = one_line(capsys, "rank", "exploding_rank", "--param", "mode=init")
    finally:
        ARCHS.unregister("exploding_rank")
    assert line == ("leakbench: error: rank exploding_rank: its constructor raised "
                    "RuntimeError: constructor exploded")


def test_sys_exit_inside_an_attack_run_inline_is_that_cells_error_record(tmp_path):
    """``raise SystemExit(3)`` in a plug-in's ``reconstruct`` under ``--jobs 0`` ended the
    whole run with exit status 3: no record, no summary, no leaderboard."""
    from bench.contracts import Attack
    from bench.registry import ATTACKS, register_attack
    from bench.store import load_records

    @register_attack("exiting")
    class Exiting(Attack):
        """Calls sys.exit from inside the attack."""

        def reconstruct(self, obs):
            raise SystemExit(3)

    try:
        summary = _run_tiny(tmp_path, seeds=2, attacks=["exiting", {"dlg": {"steps": 1}}])
    finally:
        ATTACKS.unregister("exiting")
    records = load_records(tmp_path)
    assert summary.counts == {"error": 2, "ok": 2}
    errors = [r["error"] for r in records if r["status"] == "error"]
    assert errors == ["attack: SystemExit: sys.exit(3) called inside the cell"] * 2


@pytest.mark.parametrize("args,kwargs,needle", [
    (("widths", list, [4, 4]), {}, "type list is not one a suite can give"),
    (("shape", tuple, (1, 2)), {}, "type tuple is not one a suite can give"),
    (("scale", float, 2.0), {"high": 1.0}, "its default: 2.0 is above the maximum 1"),
    (("mode", str, "fast"), {"choices": ("slow",)}, "its default: 'fast' is not one of {slow}"),
    (("steps", int, 2.5), {}, "its default: expected an integer, got 2.5"),
    (("bad name", int, 1), {}, "the name must be letters, digits, '_' or '-'"),
    (("cap", int, None), {}, "its default: expected an integer, got None (declare "
                             "nullable=True)"),
])
def test_a_parameter_declaration_no_suite_could_use_is_refused_where_it_is_written(
        args, kwargs, needle):
    """``Param("widths", list, …)`` crashed every suite naming the component with
    ``TypeError: unhashable type: 'list'``; a default outside its own range or choices was
    reported as the user's suite error (``s.yaml: oddparams.scale: 2.0 is above …``)."""
    from bench.registry import Param

    with pytest.raises(TypeError, match="^Param ") as caught:
        Param(*args, **kwargs)
    assert needle in str(caught.value)


def test_a_nullable_parameter_may_default_to_none():
    from bench.registry import Param

    assert Param("root", str, None, nullable=True).default is None


def test_an_executor_registered_under_a_taken_name_is_refused():
    """A plug-in's ``@register_executor("process")`` silently replaced the process executor
    for the rest of the process (the other registries refuse a second registration)."""
    from bench.executors.base import EXECUTORS, load_executors, register_executor

    load_executors()
    ours = EXECUTORS["process"]

    class Hijack:
        """Not the process executor."""

    with pytest.raises(ValueError, match="executor 'process' is registered twice"):
        register_executor("process")(Hijack)
    assert EXECUTORS["process"] is ours
    register_executor("process")(ours)  # the same class again (a re-import) is no clash


def test_the_rerun_report_prints_a_metric_to_its_own_digits():
    """``rerun --metric ssim`` printed 0.00 and [-0.00, 0.03]: two decimals for every metric,
    where the tables print SSIM to three (a plug-in's MAE, to its own digits)."""
    from bench.rerun import Check, report

    check = Check("c1", "row", 3, 0.0123, (0.0011, 0.0234), (0.0, 0.05), 0.0125, 0.0131, "ok",
                  "ssim", False, None)
    lines = report([check]).splitlines()
    row = next(x for x in lines if x.startswith("| c1"))
    assert "| 0.013 " in row and "[0.001, 0.023]" in row and "[0.000, 0.050]" in row
    assert "0.01 " not in row


def test_merging_two_spellings_of_one_configuration_says_it_fills_two_rows(tmp_path, capsys):
    """``defenses: [prune]`` in one run and ``{prune: {ratio: [0.2, 0.5]}}`` in another label
    the same cells ``prune`` and ``prune(ratio=0.2)``: the merged leaderboard split one
    configuration into two rows, and neither merge nor leaderboard said so."""
    from bench.cli import main
    from bench.runner import run_suite
    from helpers import make_suite

    plain, grid = tmp_path / "plain", tmp_path / "grid"
    common = {"datasets": [{"digits": {"size": 8}}], "archs": [{"mlp": {"hidden": 8}}],
              "attacks": ["analytic"]}
    run_suite(make_suite(seeds=1, defenses=["prune"], **common), plain, jobs=0,
              device="cpu", progress=False)
    run_suite(make_suite(seeds=2, defenses=[{"prune": {"ratio": [0.2, 0.5]}}], **common),
              grid, jobs=0, device="cpu", progress=False)
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["merge", str(out), str(plain), str(grid)]) == 0
    line = ("defense: 'prune' and 'prune(ratio=0.2)' name one configuration (suites that "
            "spelled it differently); the tables list them as separate rows")
    assert capsys.readouterr().err.count(line) == 1
    assert main(["leaderboard", str(out)]) == 0
    assert capsys.readouterr().err.count(f"{out}: {line}") == 1
    assert main(["leaderboard", str(grid)]) == 0
    assert "name one configuration" not in capsys.readouterr().err


FORGOT = '''
from bench.contracts import Attack


class Forgot(Attack):
    """An attack whose author forgot ``@register_attack``."""
'''

BAD_METRIC = '''
from bench.metrics.base import Metric, register_metric


class NoBounds(Metric):
    """A metric whose bounds are not numbers."""

    name, label, modality, kind = "nobounds", "NoBounds", "image", "per_item"
    higher_is_better, digits, order, best, worst = True, 2, 999, "high", None
    compute = staticmethod(lambda a, b: a.sum())


register_metric(NoBounds)
'''


def test_a_plugin_that_registers_nothing_is_named_with_the_likely_cause(tmp_path):
    """An entry point to a class without its decorator loaded, registered nothing, and the
    suite only said "unknown attack 'forgot'"."""
    from helpers import run_cli, write_plugin

    root = write_plugin(tmp_path, "leakbench_forgot", FORGOT,
                        "[leakbench.attacks]\nforgot = leakbench_forgot:Forgot\n")
    out = run_cli("list", "attacks", extra_path=root)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        "leakbench: warning: plug-in forgot = leakbench_forgot:Forgot (package "
        "leakbench-forgot), entry-point group leakbench.attacks: loaded, but registered no "
        "attack (a class without its @register_attack decorator?)")


def test_a_plugin_load_error_points_into_the_plugin_not_into_leakbench_or_python(tmp_path):
    """A bad metric schema was located at ``bench/metrics/base.py:116``, a missing module at
    ``importlib/__init__.py:126``: the last frame, not the plug-in's."""
    from helpers import run_cli, write_plugin

    root = write_plugin(tmp_path, "leakbench_badmetric", BAD_METRIC,
                        "[leakbench.metrics]\nnobounds = leakbench_badmetric\n")
    out = run_cli("list", "metrics", extra_path=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(f"({root / 'leakbench_badmetric.py'}:13)"), out.stderr
    (tmp_path / "m").mkdir()
    missing = write_plugin(tmp_path / "m", "leakbench_gone", "x = 1\n",
                           "[leakbench.attacks]\ngone = leakbench_gone_missing\n")
    out = run_cli("list", "attacks", extra_path=missing)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("No module named 'leakbench_gone_missing'"), out.stderr


@pytest.mark.parametrize("attrs,name,needle", [
    ({"update_kinds": frozenset({"gradients"})}, "kindbogus",
     "attack 'kindbogus': update_kinds names 'gradients', not one of delta, gradient"),
    ({"update_kinds": frozenset()}, "kindless",
     "attack 'kindless': update_kinds is empty: no cell could ever run it"),
    ({"modalities": "image"}, "stringmodalities",
     "attack 'stringmodalities': modalities must be a set of names"),
    ({}, "Bad Name!", "attack 'Bad Name!': the name 'Bad Name!' is not one a suite can write"),
])
def test_an_attack_declaring_what_no_suite_could_use_is_refused_at_registration(attrs, name,
                                                                                needle):
    """``update_kinds = {"gradients"}`` skipped every cell ("inverts only gradients updates;
    a fedsgd client shares a gradient update"): the plug-in's typo read as the suite's."""
    from bench.contracts import Attack
    from bench.registry import ATTACKS, register_attack

    cls = type("Declared", (Attack,), {"__doc__": "A declaration under test.", **attrs})
    with pytest.raises(TypeError) as caught:
        register_attack(name)(cls)
    assert str(caught.value).startswith(needle)
    assert name not in ATTACKS


def test_a_defense_for_no_data_is_refused_at_registration():
    from bench.contracts import Defense
    from bench.registry import register_defense

    cls = type("Nowhere", (Defense,), {"__doc__": "No data.", "modalities": frozenset()})
    with pytest.raises(TypeError, match="defense 'nowhere': modalities is empty"):
        register_defense("nowhere")(cls)


def test_a_record_names_the_plugins_its_cell_ran(plugin_path, tmp_path):
    """A record named leakbench's commit only: after a plug-in changed, its finished cells
    were kept as done with nothing saying which plug-in made them."""
    import json

    from helpers import run_cli

    suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "attacks": ["nan"],
                                               "defenses": ["none", "flip"]})
    done = run_cli("run", str(suite), "--out", str(tmp_path / "o"), "--jobs", "0",
                   extra_path=plugin_path)
    assert done.returncode == 0, done.stderr
    records = [json.loads(p.read_text()) for p in (tmp_path / "o" / "records").glob("*.json")]
    assert len(records) == 2
    assert all(r["provenance"]["plugins"] == {"leakbench-testplugin": "0.0.1"}
               for r in records), [r["provenance"].get("plugins") for r in records]


def test_a_built_in_cells_record_names_no_plugins(tmp_path):
    from bench.store import load_records

    _run_tiny(tmp_path)
    (record,) = load_records(tmp_path)
    assert "plugins" not in record["provenance"]


def test_an_attack_needing_a_grant_that_does_not_exist_is_one_line_naming_the_typo(tmp_path,
                                                                                   capsys):
    """``needs = {"labelz"}`` skipped every cell with "needs labelz, which the suite does not
    grant": a suite cannot grant what does not exist."""
    from bench.contracts import Attack
    from bench.registry import ATTACKS, register_attack

    register_attack("needsbogus")(type("NeedsBogus", (Attack,), {
        "__doc__": "Needs a grant that does not exist.", "needs": frozenset({"labelz"})}))
    try:
        suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "attacks": ["needsbogus"]})
        line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--dry-run")
    finally:
        ATTACKS.unregister("needsbogus")
    assert line == (f"leakbench: error: {suite}: attack needsbogus declares needs/wants "
                    "'labelz', which no grant provides (grants: bn_stats, labels, public_data)")


@pytest.mark.parametrize("kind,body,needle", [
    ("attack", "return None",
     "attack: TypeError: attack badreturn: reconstruct returned None, expected a "
     "Reconstruction"),
    ("attack", "return [1]",
     "attack: TypeError: attack badreturn: reconstruct returned list, expected a "
     "Reconstruction"),
    ("defense", "return None",
     "setup: TypeError: defense badreturn: transform_update returned None, expected an Update"),
    ("defense", "out = update.clone(); out.tensors = out.tensors[:-1]; return out",
     "setup: ValueError: defense badreturn: transform_update returned 7 tensors for the "
     "model's 8 parameters"),
    ("defense", "out = update.clone(); out.tensors[0] = out.tensors[0].flatten(); return out",
     "setup: ValueError: defense badreturn: transform_update returned shape (900,) for "
     "parameter 0, expected a floating-point tensor of shape (12, 3, 5, 5)"),
    ("defense", "out = update.clone(); out.tensors[1] = out.tensors[1].long(); return out",
     "setup: ValueError: defense badreturn: transform_update returned a torch.int64 tensor "
     "for parameter 1, expected a floating-point tensor of shape (12,)"),
])
def test_a_component_returning_the_wrong_thing_is_an_error_naming_it(kind, body, needle,
                                                                      tmp_path):
    """A plug-in attack returning None ended ``score: AttributeError: 'NoneType' object has no
    attribute 'info'``, a defense dropping a tensor ``attack: IndexError``: the wrong stage,
    no component named."""
    import textwrap

    from bench.contracts import Attack, Defense
    from bench.registry import REGISTRIES, register_attack, register_defense
    from bench.store import load_records

    method = "reconstruct(self, obs)" if kind == "attack" else \
        "transform_update(self, update, ctx)"
    namespace: dict = {}
    exec(textwrap.dedent(f"""
        def method({method.split("(", 1)[1]}:
            {body}
    """), namespace)
    base, register = (Attack, register_attack) if kind == "attack" else \
        (Defense, register_defense)
    register("badreturn")(type("BadReturn", (base,), {
        "__doc__": "Returns the wrong thing.", method.split("(")[0]: namespace["method"]}))
    axis = kind + "s"
    try:
        _run_tiny(tmp_path, **{axis: ["badreturn"]})
    finally:
        REGISTRIES[axis].unregister("badreturn")
    (record,) = load_records(tmp_path)
    assert record["status"] == "error" and record["error"].startswith(needle), record["error"]


@pytest.mark.parametrize("data,labels,needle", [
    ("torch.zeros(1, 1, 16, 16)", None,
     "its Reconstruction.data has shape (1, 1, 16, 16), expected (1, 3, 16, 16)"),
    ("torch.zeros(1, 3, 16, 16, dtype=torch.int64)", None,
     "its Reconstruction.data is torch.int64, expected a floating-point tensor"),
    ("torch.zeros(1, 3, 16, 16)", "torch.tensor([57])",
     "its Reconstruction.labels holds 57, outside the classes 0…7"),
    ("torch.zeros(1, 3, 16, 16)", "torch.zeros(1, 10)",
     "its Reconstruction.labels is torch.float32, expected integer class indices"),
    ("torch.zeros(1, 3, 16, 16)", "torch.nn.functional.one_hot(torch.tensor([3]), 8)",
     "its Reconstruction.labels has shape (1, 8), expected one class index per sample"),
])
def test_a_reconstruction_of_the_wrong_shape_dtype_or_classes_is_an_error_naming_it(
        data, labels, needle, tmp_path):
    """A grey reconstruction of a colour batch was broadcast to three channels and scored,
    integer data was read as pixels, and label 57 of 8 classes (or a row of scores, or an
    integer one-hot row) was scored as a wrong guess: a plug-in's bug became a low score."""
    import torch

    from bench.contracts import Attack, Reconstruction
    from bench.registry import ATTACKS, register_attack
    from bench.store import load_records

    def reconstruct(self, obs):
        return Reconstruction(eval(data, {"torch": torch}),  # noqa: S307 (the test's own)
                              None if labels is None else eval(labels, {"torch": torch}))

    register_attack("badshape")(type("BadShape", (Attack,), {
        "__doc__": "Returns a malformed reconstruction.", "reconstruct": reconstruct}))
    try:
        _run_tiny(tmp_path, attacks=["badshape"])
    finally:
        ATTACKS.unregister("badshape")
    (record,) = load_records(tmp_path)
    assert record["status"] == "error", record
    assert record["error"].startswith("attack: ") and f"attack badshape: {needle}" in \
        record["error"], record["error"]


@pytest.mark.parametrize("data,info,outcome", [
    ("torch.full((1, 8), 3.7)", {}, "its Reconstruction.data is torch.float32, expected token "
     "ids (an integer tensor)"),
    ("torch.full((1, 8), 5000)", {}, "its Reconstruction.data holds token id(s) 5000, outside "
     "the vocabulary 0…"),
    ("torch.full((1, 8), float('nan'))", {"diverged": True}, "diverged"),
    ("torch.full((1, 8), 5, dtype=torch.int8)", {}, "ok"),  # compared in int8, 1000 wrapped
])
def test_a_text_reconstruction_of_other_than_token_ids_is_an_error_naming_it(
        data, info, outcome, tmp_path):
    """Token data went through ``decode``, which truncated 3.7 to 3 and clamped 5000 to the
    vocabulary's last id, and the cell was scored; a diverged trial's data stays its own."""
    import torch

    from bench.contracts import Attack, Reconstruction
    from bench.registry import ATTACKS, register_attack
    from bench.store import load_records

    def reconstruct(self, obs):
        return Reconstruction(eval(data, {"torch": torch}), info=dict(info))  # noqa: S307

    register_attack("badtokens")(type("BadTokens", (Attack,), {
        "__doc__": "Returns malformed token ids.", "reconstruct": reconstruct,
        "modalities": frozenset({"text"})}))
    try:
        _run_tiny(tmp_path, attacks=["badtokens"], archs=[{"transformer": {"width": 32}}],
                  datasets=[{"pydoc": {"task": "classify", "seq_len": 8}}])
    finally:
        ATTACKS.unregister("badtokens")
    (record,) = load_records(tmp_path)
    if outcome in ("diverged", "ok"):
        assert record["status"] == outcome, record
    else:
        assert record["status"] == "error" and f"attack badtokens: {outcome}" in \
            record["error"], record["error"]


def test_a_run_with_nothing_to_run_draws_no_empty_progress_bar(tmp_path, capsys):
    """A resumed run whose cells were all done drew "quick: 0cell [00:00, ?cell/s]" twice."""
    from bench.runner import run_suite
    from helpers import make_suite

    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=True)
    assert "1/1" in capsys.readouterr().err  # the bar of the first run
    run_suite(make_suite(), tmp_path, jobs=0, device="cpu", progress=True)
    assert "cell/s" not in capsys.readouterr().err


def test_a_leaderboard_missing_a_plugins_metric_says_so(tmp_path, capsys):
    """Uninstalling a metric plug-in dropped its column from the leaderboard in silence, while
    the records still held it."""
    import json

    from bench.cli import main

    _run_tiny(tmp_path)
    (path,) = (tmp_path / "records").glob("*.json")
    record = json.loads(path.read_text())
    record["metrics"].update(mae=0.25, mae_worst=0.25)
    path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main(["leaderboard", str(tmp_path)]) == 0
    assert capsys.readouterr().err.strip() == (
        f"leakbench: warning: {tmp_path}: the records hold metric(s) 'mae' that no installed "
        "metric defines: the tables leave them out (install the plug-in that registers them to "
        "render the leaderboard they were run with)")


@pytest.mark.parametrize("compute,shape", [
    (lambda a, b: (a - b).abs().mean(), "()"),
    (lambda a, b: (a - b).abs().flatten(1).mean(-1).repeat(2), "(4,)"),
    (lambda a, b: [0.1, 0.2], "list"),
])
def test_a_per_item_metric_returning_other_than_one_value_per_image_is_named(compute, shape):
    """A plug-in metric returning a scalar, or 2N values, was averaged as if it were N (or
    failed) without naming the metric."""
    import torch

    from bench.metrics.base import METRICS, Metric, register_metric
    from bench.scoring import score

    class Odd(Metric):
        """A per-item metric of the wrong shape."""

        name, label, modality, kind = "odd_shape", "Odd", "image", "per_item"
        higher_is_better, digits, order, best, worst = False, 4, 999, 0.0, 1.0

    Odd.compute = staticmethod(compute)
    register_metric(Odd)
    try:
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
        with pytest.raises(ValueError) as caught:
            score(x, torch.tensor([0, 1]), x.flip(0), None)
    finally:
        METRICS.unregister("odd_shape")
    assert str(caught.value) == (f"metric odd_shape: compute returned {shape}, expected a "
                                 "tensor of 2 values, one per image")



def test_a_hyphenated_parameter_name_is_still_declared():
    from bench.registry import Param

    assert Param("max-iter", int, 3).default == 3


def test_pixels_a_resize_overshoots_by_rounding_are_kept_as_they_are():
    """An antialiased resize of a float image overshoots 1 by ~1e-7 (imagefolder's 16-bit
    greys): the exact [0, 1] check refused a built-in dataset (a review)."""
    import torch

    from bench.data import stack_items

    near = [(torch.full((1, 2, 2), 1.0000002), 0), (torch.full((1, 2, 2), -2e-7), 1)]
    x, _ = stack_items(near, [0, 1])
    assert float(x.max()) == pytest.approx(1.0000002) and float(x.min()) == pytest.approx(-2e-7)
    with pytest.raises(ValueError, match=r"lie outside \[0, 1\] \(min 0, max 1.001\)"):
        stack_items([(torch.full((1, 2, 2), 1.001), 0), (torch.zeros(1, 2, 2), 0)], [0, 1])


def test_a_dataset_of_integer_pixels_is_an_error_naming_them(tmp_path, monkeypatch):
    """uint8 images (0–255) failed only later, as an MSE of 16 774 outside its range."""
    error = _digits_error(tmp_path, monkeypatch, images=lambda x: (x * 255).round().byte())
    assert "the dataset's images are uint8 (0–255?): a dataset's load() returns float pixels " \
           "in [0, 1]" in error


@pytest.mark.parametrize("flag", [True, False, 1, 0, None, "image", frozenset({"image"})])
def test_batched_trials_in_the_forms_the_runner_reads_still_registers(flag):
    """``batched_trials = True`` (the form before modalities), which the runner still reads,
    stopped a plug-in loading with a bare "'bool' object is not iterable" (a review)."""
    from bench.contracts import Attack
    from bench.registry import ATTACKS, register_attack

    cls = type("Flagged", (Attack,), {"__doc__": "Batched by a flag.", "batched_trials": flag})
    try:
        register_attack("flagged")(cls)
    finally:
        ATTACKS.unregister("flagged")


def test_rays_termination_is_not_recorded_as_the_cells_own_exit(tmp_path):
    """Ray's SIGTERM handler raises a SystemExit carrying ``ray_terminate_msg`` (a node
    drained): recorded, it blamed the cell and kept Ray from retrying the task (a review)."""
    from bench.contracts import Attack
    from bench.registry import ATTACKS, register_attack

    @register_attack("terminated")
    class Terminated(Attack):
        """Told to stop, as Ray tells a worker."""

        def reconstruct(self, obs):
            e = SystemExit(1)
            e.ray_terminate_msg = "The process receives a SIGTERM."
            raise e

    try:
        with pytest.raises(SystemExit) as caught:
            _run_tiny(tmp_path, attacks=["terminated"])
    finally:
        ATTACKS.unregister("terminated")
    assert caught.value.ray_terminate_msg == "The process receives a SIGTERM."


def test_a_record_too_large_to_read_back_is_the_cells_error_record(tmp_path, monkeypatch):
    """The readers refuse a record over ``MAX_RECORD_BYTES``; written, it was quarantined by
    the next read (a review)."""
    import bench.cells.trials
    from bench.store import load_records

    monkeypatch.setattr(bench.cells.trials, "MAX_RECORD_BYTES", 2000)
    _run_tiny(tmp_path)
    (record,) = load_records(tmp_path)
    assert record["status"] == "error"
    assert "bytes, larger than a record may be (2000): the record check would refuse" in \
        record["error"]


FAKELIB = '''
def load_weights(path):
    raise FileNotFoundError(path)
'''

CALLS_FAKELIB = '''
import leakbench_fakelib

WEIGHTS = leakbench_fakelib.load_weights("/nonexistent/weights.npy")
'''


def test_a_plugin_failing_inside_a_library_is_located_at_its_own_line(tmp_path):
    """A plug-in's ``np.load`` failing at import was located in numpy's file (a review)."""
    from helpers import run_cli, write_plugin

    root = write_plugin(tmp_path, "leakbench_callslib", CALLS_FAKELIB,
                        "[leakbench.attacks]\ncallslib = leakbench_callslib\n")
    (root / "leakbench_fakelib.py").write_text(FAKELIB)
    out = run_cli("list", "attacks", extra_path=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().endswith(f"({root / 'leakbench_callslib.py'}:4)"), out.stderr


def test_a_metric_that_raises_is_named_in_the_cells_error(tmp_path):
    """A plug-in metric raising while the floor was scored ended ``setup: KeyError: 3``."""
    from bench.metrics.base import METRICS, Metric, register_metric
    from bench.store import load_records

    def broken(a, b):
        raise KeyError(3)

    class Broken(Metric):
        """Raises."""

        name, label, modality, kind = "broken_metric", "Broken", "image", "per_item"
        higher_is_better, digits, order, best, worst = False, 4, 999, 0.0, 1.0
        compute = staticmethod(broken)

    register_metric(Broken)
    try:
        _run_tiny(tmp_path)
    finally:
        METRICS.unregister("broken_metric")
    (record,) = load_records(tmp_path)
    assert record["error"] == "setup: ValueError: metric broken_metric: compute raised " \
        "KeyError: 3"


def test_the_committed_attack_quality_table_regenerates_with_fixed_decimals(tmp_path):
    """tabulate re-parsed the formatted KID values: -1.3110 printed as -1.311 beside
    -8.8825 (the one tabulate call without ``disable_numparse``)."""
    import shutil

    from bench.cli import main
    from helpers import ROOT

    committed = ROOT / "results" / "prior" / "attack_quality.md"
    shutil.copytree(ROOT / "results" / "prior", tmp_path / "prior")
    assert main(["prior-curve", "--attacks", str(tmp_path / "prior")]) == 0
    assert (tmp_path / "prior" / "attack_quality.md").read_bytes() == committed.read_bytes()
    assert "| -8.0510 |" in committed.read_text()  # a trailing zero kept (KID over halves)


def test_a_committed_report_regenerates_byte_for_byte_under_another_home(tmp_path,
                                                                         monkeypatch):
    """The FID/KID note named this machine's hub folder (``/root/.cache/torch/hub/…``): under
    another ``$HOME`` or ``$TORCH_HOME`` the committed report.md changed."""
    import shutil

    from bench.cli import main
    from helpers import ROOT

    for name in ("TORCH_HOME", "XDG_CACHE_HOME", "LEAKBENCH_FID_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))
    shutil.copytree(ROOT / "results" / "labels", tmp_path / "labels")
    assert main(["report", str(tmp_path / "labels")]) == 0
    committed = (ROOT / "results" / "labels" / "report.md").read_bytes()
    assert (tmp_path / "labels" / "report.md").read_bytes() == committed
    assert b"/root" not in committed and str(tmp_path).encode() not in committed


def test_a_claims_measured_value_is_laid_out_as_text_on_the_site():
    """A claim's Measured cell ("3/4 = 0.75 [0.30, 0.95] [share of successes ≥ 0.5]") was
    a number column (right-aligned, no wrapping): the Verdict column left the page."""
    from bench.site.tables import html_table

    table = html_table("Claims", "claims", [
        {"Claim": "a", "Measured": "3/4 = 0.75 [0.30, 0.95] [share of successes ≥ 0.5]",
         "Verdict": "holds"},
        {"Claim": "b", "Measured": "8.37 dB [6.1, 10.6]", "Verdict": "does not hold"}])
    measured = next(c for c in table.columns if c.header == "Measured")
    assert not measured.numeric


@pytest.mark.parametrize("model,needle", [
    ("None", "setup: TypeError: arch badbuild: build returned None, expected a torch.nn.Module"),
    ("torch.nn.Flatten()", "setup: ValueError: arch badbuild: build returned a model with no "
     "trainable parameter"),
])
def test_an_arch_building_no_trainable_model_is_an_error_naming_it(model, needle, tmp_path):
    """A plug-in arch whose ``build`` returned None ended ``setup: AttributeError: 'NoneType'
    object has no attribute 'to'``, one without parameters ``setup: RuntimeError: `inputs`
    argument to `grad()` cannot be empty``: neither named the architecture."""
    import torch

    from bench.contracts import Arch
    from bench.registry import ARCHS, register_arch
    from bench.store import load_records

    register_arch("badbuild")(type("BadBuild", (Arch,), {
        "__doc__": "Builds no trainable model.",
        "build": lambda self, input_shape, num_classes: eval(model, {"torch": torch})}))
    try:
        _run_tiny(tmp_path, archs=["badbuild"])
    finally:
        ARCHS.unregister("badbuild")
    (record,) = load_records(tmp_path)
    assert record["status"] == "error" and record["error"].startswith(needle), record["error"]
