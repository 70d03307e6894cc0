"""Bad input found in 2026-12-05's ninth pass: each is one line naming the problem and exit
status 2."""

from __future__ import annotations

import pytest

from helpers import one_line

READERS = [("leaderboard",), ("report",), ("check",), ("table",), ("export",),
           ("rerun",), ("prior-curve", "--attacks"), ("site", "--out", "SITE")]


def _argv(command: tuple[str, ...], folder: str, tmp_path) -> list[str]:
    if command[0] == "site":
        return ["site", folder, "--out", str(tmp_path / "site")]
    return [*command, folder]


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_every_reader_names_a_missing_folder_a_file_and_a_folder_without_records(
        tmp_path, capsys, command):
    """``leakbench export /nonexist`` said "no records under /nonexist/records" where ``diff``
    said "no such folder"; a file given as the folder read as an empty store too. Every
    command that reads a results folder now says which of the three it is."""
    missing, plain, bare = tmp_path / "nope", tmp_path / "notes.txt", tmp_path / "bare"
    plain.write_text("not a results folder")
    bare.mkdir()
    assert one_line(capsys, *_argv(command, str(missing), tmp_path)) == (
        f"leakbench: error: {missing}: no such folder")
    assert one_line(capsys, *_argv(command, str(plain), tmp_path)) == (
        f"leakbench: error: {plain}: not a folder")
    assert one_line(capsys, *_argv(command, str(bare), tmp_path)) == (
        f"leakbench: error: {bare}: no records folder (run a suite into it first)")


@pytest.mark.parametrize("command", READERS, ids=lambda c: c[0])
def test_an_empty_records_folder_still_says_no_records(tmp_path, capsys, command):
    """A results folder whose store is empty is named as such, not as a missing folder."""
    folder = tmp_path / "empty"
    (folder / "records").mkdir(parents=True)
    line = one_line(capsys, *_argv(command, str(folder), tmp_path))
    assert "no records under" in line or "no attack records under" in line, line


@pytest.mark.parametrize("argv, expected", [
    (["list", "suite"], "argument kind: invalid choice: 'suite' (did you mean 'suites'?); "
                        "expected one of attacks, defenses, archs, datasets, samplers, metrics, "
                        "suites"),
    (["rnu"], "invalid choice: 'rnu' (did you mean 'run', "),
    (["run", "--device", "cdua"], "invalid choice: 'cdua' (did you mean 'cuda', 'cpu'?)"),
])
def test_a_mistyped_choice_gets_the_close_ones(capsys, argv, expected):
    """``leakbench list suite`` listed the choices with no hint; a registry name or a metric
    mistyped was already answered with "did you mean"."""
    assert expected in _parser_error(capsys, argv)


def test_a_choice_far_from_every_other_keeps_argparse_words(capsys):
    line = _parser_error(capsys, ["list", "zzz"])
    assert "invalid choice: 'zzz'" in line and "did you mean" not in line


def _parser_error(capsys, argv: list[str]) -> str:
    """argparse's refusal: exit status 2 and one line on stderr."""
    from bench.cli import main

    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.count("\n") == 1, err
    assert err.startswith("leakbench: error: "), err
    return err.strip()


def _store(tmp_path):
    """A results folder holding one committed record."""
    from helpers import ROOT

    store = tmp_path / "store"
    (store / "records").mkdir(parents=True)
    first = sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]
    (store / "records" / first.name).write_bytes(first.read_bytes())
    return store


@pytest.mark.parametrize("argv", [
    ["run", "smoke", "--out", "{store}/records/quarantine", "--jobs", "0"],
    ["run", "smoke", "--out", "{store}/records/quarantine", "--dry-run"],
    ["run", "smoke", "--out", "{store}/cells/deeper/still", "--dry-run"],
    ["export", "{store}", "--output", "{store}/records/quarantine/0123456789abcdef.json"],
    ["table", "{store}", "--output", "{store}/records/sub/x.tex"],
    ["site", "{store}", "--out", "{store}/records/quarantine"],
    ["site", "{store}", "--out", "{store}/cells/x"],
], ids=["run", "dry-run", "dry-run-cells", "export", "table", "site", "site-cells"])
def test_nothing_is_written_anywhere_inside_a_stores_records_or_cells(tmp_path, capsys, argv):
    """Only a store's own ``records/`` or ``cells/`` was refused: one folder deeper
    (``records/quarantine``, where damaged records are moved) a run, a merge, an export, a
    table or a site was written into the store."""
    store = _store(tmp_path)
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    line = one_line(capsys, *[a.format(store=store) for a in argv])
    assert "inside a results folder's " in line and "write it elsewhere" in line
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before


def test_a_dry_run_refuses_a_file_as_out_as_the_run_does(tmp_path, capsys):
    """``run --out notes.txt --dry-run`` listed the cells "to run"; the run then refused."""
    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    for extra in (["--dry-run"], ["--jobs", "0"]):
        assert one_line(capsys, "run", "smoke", "--out", str(plain), *extra) == (
            f"leakbench: error: {plain}: exists and is not a folder")


@pytest.mark.parametrize("field, value, named", [
    ("client", {"mode": "weird"}, "its client does not validate (client.mode: 'weird'"),
    ("client", {"lr": "fast"}, "its client does not validate (client.lr: expected float"),
    ("client", {"local_epochs": -3}, "its client does not validate (client.local_epochs: -3 "
                                     "is below the minimum 1)"),
    ("granted", ["flying"], "its grants ['flying'] are not capabilities"),
    ("budget", {"max_iterations": "x"}, "its budget does not validate (budget.max_iterations: "
                                        "expected an integer"),
])
def test_rerun_refuses_a_record_whose_client_grants_or_budget_do_not_validate(
        tmp_path, capsys, field, value, named):
    """Only the components were checked: a hand-edited client, grant or budget re-ran into an
    error record ("ended error here: setup: KeyError: 'flying'") and the command exited 0,
    or ran as ``fedsgd(lr=fast)``."""
    import json

    store = _store(tmp_path)
    path = next((store / "records").glob("*.json"))
    record = json.loads(path.read_text())
    record[field] = value
    path.write_text(json.dumps(record))
    line = one_line(capsys, "rerun", str(store), "--sample", "1", "--jobs", "0")
    assert f"record {record['cell_id']}: {named}" in line and "hand-edited" in line


def test_a_worker_ignores_ctrl_c_from_its_start_and_the_parent_keeps_its_handler():
    """A Ctrl-C while a worker still imported torch (before its own code ignores SIGINT)
    printed the worker's KeyboardInterrupt traceback above the parent's one line. The
    signal is ignored from the worker's first instruction now (read from /proc as soon as
    the worker exists, long before its imports end)."""
    import signal

    import torch

    from bench.executors.process import ProcessExecutor

    seen: dict[str, int] = {}

    def ignored_signals(pid: int) -> None:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("SigIgn:"):
                seen["mask"] = int(line.split()[1], 16)

    before = signal.getsignal(signal.SIGINT)
    executor = ProcessExecutor(torch.device("cpu"), timeout=60.0, jobs=1, threads=1)
    executor.on_start = ignored_signals
    slot = executor._start(0)
    try:
        assert seen["mask"] & (1 << (signal.SIGINT - 1)), hex(seen["mask"])
        assert signal.getsignal(signal.SIGINT) is before
    finally:
        slot.process.kill()
        slot.process.join()


@pytest.mark.parametrize("metric, expect, named", [
    ("psnr", {"at_least": 500}, "500 is not a bound some results meet and others not: psnr "
                                "takes values in [0, 100]"),
    ("psnr", {"at_least": -50}, "-50 is not a bound"),
    ("psnr", {"at_least": 0}, "0 is not a bound"),  # every result meets it
    ("ssim", {"at_least": 2}, "ssim takes values in [-1, 1]"),
    ("label_acc", {"at_least": 1.5}, "label_acc takes values in [0, 1]"),
    ("label_acc", {"at_most": 1}, "1 is not a bound"),
    ("mse", {"at_most": 1}, "mse takes values in [0, 1]"),
    ("risk_index", {"at_least": 2}, "risk_index takes values in [0, 1]"),
])
def test_a_claim_bound_no_result_can_meet_or_every_one_meets_is_refused(tmp_path, metric,
                                                                        expect, named):
    """``psnr at_least 500`` was accepted and never held, ``at_least -50`` always held; a
    suite's success bound was already checked against the metric's range."""
    import yaml

    from bench.claims.schema import ClaimsError, load_claims

    claim = {"id": "x", "paper": "p", "sentence": "s", "where": {"attack": "dlg"},
             "metric": metric, "expect": expect}
    path = tmp_path / "c.claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    with pytest.raises(ClaimsError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_claims(str(path))


@pytest.mark.parametrize("metric, expect", [
    ("psnr", {"at_least": 100}), ("label_acc", {"at_most": 0}), ("label_acc", {"at_least": 1}),
    ("mse", {"at_least": 0.5}), ("success", {"at_most": 0}), ("risk_index", {"at_least": 1})])
def test_a_bound_at_the_far_end_of_the_range_is_a_claim(tmp_path, metric, expect):
    """Exact recovery (label accuracy 1, PSNR at its cap) and no recovery at all are claims
    papers make; only the bound every result meets is refused."""
    import yaml

    from bench.claims.schema import load_claims

    claim = {"id": "x", "paper": "p", "sentence": "s", "where": {"attack": "dlg"},
             "metric": metric, "expect": expect}
    path = tmp_path / "c.claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    assert load_claims(str(path)).claims[0].metric == metric


def test_a_claim_on_a_text_metric_of_image_cells_is_refused_not_read_as_not_run(tmp_path,
                                                                               capsys):
    import yaml

    from helpers import ROOT

    claim = {"id": "x", "paper": "p", "sentence": "s", "where": {"attack": "dlg"},
             "metric": "rouge1", "expect": {"at_least": 0.5}}
    path = tmp_path / "c.claims.yaml"
    path.write_text(yaml.safe_dump({"claims": [claim]}))
    store = tmp_path / "store"
    (store / "records").mkdir(parents=True)
    for f in sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[:20]:
        (store / "records" / f.name).write_bytes(f.read_bytes())
    assert one_line(capsys, "check", str(store), "--claims", str(path)) == (
        "leakbench: error: claim x: rouge1 is a metric of text cells, and the cells it names "
        "are image cells")
    assert sorted(p.name for p in store.iterdir()) == ["records"]


@pytest.mark.parametrize("param", ["width", "=3"])
def test_rank_param_without_a_value_asks_for_name_equals_value(capsys, param):
    """``rank lenet --param width`` said "lenet.width: expected an integer, got None"."""
    assert one_line(capsys, "rank", "lenet", "--param", param) == (
        f"leakbench: error: --param {param}: expected NAME=VALUE, e.g. width=8")


def test_fedavg_settings_on_a_fedsgd_client_are_named(capsys):
    """``client: {mode: fedsgd, local_epochs: 5}`` ran in silence: the one gradient FedSGD
    shares ignores FedAvg's local schedule and step, but the cells (and rows) were apart."""
    from bench.suite import parse_suite
    from helpers import TINY_SUITE

    suite = parse_suite({**TINY_SUITE, "client": [{"mode": "fedsgd", "local_epochs": 5},
                                                  {"mode": "fedavg", "lr": 0.5}]})
    assert suite.warnings == ["client: local_epochs=5 with mode fedsgd changes nothing "
                              "(FedAvg's local steps; fedsgd shares one gradient) but makes "
                              "cells of its own: leave it out of the fedsgd client (an entry "
                              "of its own), or set mode: fedavg"]
    assert parse_suite({**TINY_SUITE, "client": {"mode": "fedavg", "local_epochs": 2}}
                       ).warnings == []


@pytest.mark.parametrize("attack", [{"ig": {"iterations": 1}}, "analytic", "rgap"])
@pytest.mark.parametrize("defense", ["none", "dpsgd", "soteria"])
def test_an_architecture_that_cannot_take_the_input_is_skipped_with_its_reason(attack,
                                                                                defense):
    """A ConvNet on 8×8 digits (two 3×3 pools need 9×9): with ``ig`` every cell ran into an
    error record; with ``analytic``, ``rgap``, ``dpsgd`` or ``soteria`` (which build the
    model while the suite is checked) the suite was refused in that component's name."""
    from bench.suite import attack_cells
    from helpers import make_suite

    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=["convnet"],
                       attacks=[attack], defenses=[defense])
    reasons = {c.skip_reason for c in attack_cells(suite)}
    assert reasons == {"convnet needs inputs of at least 9×9 (two 3×3 pools), got 8×8"}


def test_diff_and_merge_name_a_file_given_as_a_folder(tmp_path, capsys):
    """``diff A notes.txt`` said "no such folder" of a file that exists; ``merge OUT
    notes.txt`` said ".../notes.txt/records is missing"."""
    from helpers import ROOT

    plain = tmp_path / "notes.txt"
    plain.write_text("x")
    quick = str(ROOT / "results" / "quick")
    assert one_line(capsys, "diff", quick, str(plain)) == (
        f"leakbench: error: diff: B {plain}: not a folder")
    assert one_line(capsys, "merge", str(tmp_path / "out"), str(plain)) == (
        f"leakbench: error: merge: {plain}: not a folder")
    assert one_line(capsys, "merge", str(tmp_path / "out"), str(tmp_path / "nope")) == (
        f"leakbench: error: merge: {tmp_path / 'nope'}: no such folder")
    assert not (tmp_path / "out").exists()


def test_rank_param_with_an_empty_value_asks_for_one(capsys):
    assert one_line(capsys, "rank", "lenet", "--param", "width=") == (
        "leakbench: error: --param width=: expected NAME=VALUE, e.g. width=8")


def test_prior_curve_writes_nothing_inside_a_stores_records(tmp_path, capsys):
    """``prior-curve --out STORE/records`` would write samplers.json where the store reads
    every ``*.json`` as a record."""
    store = _store(tmp_path)
    line = one_line(capsys, "prior-curve", "--out", str(store / "records"), "--samples", "4")
    assert "inside a results folder's records/" in line


def test_the_parent_gets_a_handler_back_that_python_did_not_set(monkeypatch):
    """``signal.signal`` answers None for a handler installed outside Python; putting None
    back raised TypeError and left SIGINT ignored in the parent."""
    import signal

    from bench.executors import process

    calls: list = []

    def fake(signum, handler):
        calls.append(handler)
        return None if len(calls) == 1 else signal.SIG_IGN

    monkeypatch.setattr(process.signal, "signal", fake)
    with process._interrupt_ignored_by_children():
        pass
    assert calls == [signal.SIG_IGN, signal.default_int_handler]


@pytest.mark.parametrize("body, named", [
    ("import sys\nsys.exit(5)\n", "it called sys.exit(5) ({file}:2)"),
    ("from bench.registry import Param\nP = Param('level', float, 2.0, low=0.0, high=1.0)\n",
     "TypeError: Param 'level': its default: 2.0 is above the maximum 1 ({file}:2)"),
    ("def f(:\n    pass\n", "SyntaxError: "),
    ("import no_such_module_here\n", "ModuleNotFoundError: No module named "
                                     "'no_such_module_here' ({file}:1)"),
])
def test_a_component_file_that_fails_to_load_is_one_line_naming_it(tmp_path, monkeypatch,
                                                                   body, named):
    """A file dropped into attacks/ (the README's first plug-in route) that broke gave a
    40-line traceback and exit 1, or, calling sys.exit, ended every command silently; an
    entry point's was already one line naming its file and line."""
    import sys

    from bench.registry import PluginError, import_components

    package = tmp_path / "mycomponents"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "broken.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "mycomponents", raising=False)
    with pytest.raises(PluginError) as err:
        import_components(["mycomponents"], "leakbench.no-such-group")
    assert str(err.value).startswith("component module mycomponents.broken failed to load: ")
    assert named.format(file=package / "broken.py") in str(err.value)


def test_two_components_of_one_name_are_named_with_their_files():
    """``@register_attack("dlg")`` in a plug-in said "attack 'dlg' is registered twice",
    naming neither class nor file (the traceback pointed at the built-in's)."""
    from bench.registry import Registry

    registry = Registry("attack", (), "leakbench.no-such-group")

    class First:
        """One."""

    class Second:
        """Two."""

    registry.register("same")(First)
    with pytest.raises(ValueError, match=r"attack 'same' is registered twice: by .*First "
                                         r"\(.*test_hunt9.py\) and by .*Second"):
        registry.register("same")(Second)


def test_needs_given_as_one_name_is_refused_at_registration():
    """``needs = "labels"`` crashed a suite's load with "unsupported operand type(s) for |:
    'str' and 'frozenset'", a traceback."""
    from bench.declarations import declaration_problem

    class Mine:
        needs = "labels"
        modalities = frozenset({"image"})
        update_kinds = frozenset({"gradient"})

    assert declaration_problem("attack", "mine", Mine) == (
        "needs must be a set of capability names, got 'labels'")
    Mine.needs = frozenset({"labels"})
    assert declaration_problem("attack", "mine", Mine) is None


def test_list_prints_nothing_before_a_plug_in_that_fails_to_load(monkeypatch, capsys):
    """``list attacks`` printed "attacks:" on stdout before the plug-in's error."""
    from bench.registry import ATTACKS, PluginError

    def broken() -> None:
        raise PluginError("plug-in x failed to load: it broke")

    from bench.cli import main

    monkeypatch.setattr(ATTACKS, "entries", broken)
    assert main(["list", "attacks"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "leakbench: error: plug-in x failed to load: it broke\n")


def test_a_defense_that_shares_nan_is_named_in_the_diverged_record(tmp_path):
    """A defense whose update held NaN gave the cell "the attack's loss or image became
    NaN/inf", blaming the attack alone."""
    from bench.contracts import Defense
    from bench.registry import DEFENSES, register_defense
    from bench.runner import run_suite
    from helpers import make_suite

    @register_defense("nanify")
    class Nanify(Defense):
        """Multiplies the update by NaN."""

        def transform_update(self, update, ctx):
            out = update.clone()
            out.tensors = [t * float("nan") for t in update.tensors]
            return out

    try:
        run_suite(make_suite(defenses=["nanify"], seeds=1), tmp_path, jobs=0, device="cpu",
                  progress=False)
    finally:
        DEFENSES.unregister("nanify")
    import json

    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "records").glob("*.json")]
    assert record["status"] == "diverged"
    assert record["error"] == ("the attack's loss or image became NaN/inf (the update shared "
                               "after nanify already held non-finite values)")


def test_a_constructor_calling_sys_exit_is_one_line(tmp_path, capsys):
    """A plug-in defense whose constructor called ``sys.exit(4)`` ended ``run`` with exit 4
    and no word."""
    import sys

    from bench.contracts import Defense
    from bench.registry import DEFENSES, register_defense
    from helpers import TINY_SUITE, write_suite

    @register_defense("quitter")
    class Quitter(Defense):
        """Quits."""

        def __init__(self, **kwargs):
            sys.exit(4)

    try:
        suite = write_suite(tmp_path / "s.yaml", **{**TINY_SUITE, "defenses": ["quitter"]})
        line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "o"), "--dry-run")
    finally:
        DEFENSES.unregister("quitter")
    assert line == (f"leakbench: error: {suite}: defense quitter raised SystemExit: sys.exit(4) "
                    "while the suite was checked (its constructor or its compatibility check)")


def test_a_text_folder_reads_txt_files_whatever_the_case_of_their_suffix(tmp_path):
    """``A.TXT`` and ``b.Txt`` (Windows editors' names) were skipped in silence."""
    from bench.textcorpus import folder_sentences

    (tmp_path / "A.TXT").write_text("The cat sat on the mat today.\n")
    (tmp_path / "b.Txt").write_text("The dog ran in the park today.\n")
    (tmp_path / "c.md").write_text("Not a text file of the corpus here.\n")
    assert folder_sentences(str(tmp_path)) == (
        ("A", "The cat sat on the mat today."), ("b", "The dog ran in the park today."))


def test_a_defense_level_or_a_metric_direction_that_contradicts_itself_is_refused():
    """A defense ``level = "updates"`` (a typo) was accepted and acted as no level; a metric
    whose best lies below its worst while higher is better was accepted."""
    from bench.declarations import declaration_problem
    from bench.metrics.base import Metric, register_metric

    class Typo:
        modalities = frozenset({"image"})
        level = "updates"

    assert declaration_problem("defense", "typo", Typo) == (
        "level must be one of none, data, update, protocol, got 'updates'")

    class Backwards(Metric):
        """A distance declared higher-is-better."""

        name, label, modality, kind, digits = "backwards", "B", "image", "per_item", 3
        higher_is_better, best, worst, order = True, 0.0, 1.0, 99

        @staticmethod
        def compute(a, b):
            return a

    with pytest.raises(TypeError, match="best and worst contradict higher_is_better"):
        register_metric(Backwards)
