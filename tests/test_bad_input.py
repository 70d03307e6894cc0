"""Bad suites: one line on stderr naming the file and the key, exit 2, never a traceback;
limits before work; excludes and grants that do nothing are reported."""

from __future__ import annotations

import re
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.identity import digest
from bench.registry import ATTACKS, Param, ParamError
from bench.runner import run_suite
from bench.suite import SuiteError, count_cells, iter_cells, load_suite, parse_suite
from bench.suite.read import MAX_SUITE_BYTES
from helpers import ROOT, THOUSAND_PER_SEED, TINY_SUITE, make_suite


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(capsys: pytest.CaptureFixture, *args: str) -> str:
    """The command's error: exit 2, one line on stderr, no traceback."""
    code, _, err = cli(capsys, *args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("leakbench: error: "), err
    assert "Traceback" not in err
    return lines[0]


def one_line_error(capsys: pytest.CaptureFixture, *args: str) -> str:
    return one_line(capsys, "run", *args, "--dry-run")


def suite_text(**overrides: object) -> str:
    return yaml.safe_dump({**TINY_SUITE, **overrides})


FILES = {
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "latin1": ("attacks: [dlg]  # caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "empty": (b"", "empty"),
    "blank": (b"  \n\n# only a comment\n", "empty"),
    "scalar": (b"42\n", "must be a mapping"),
    "list": (b"- dlg\n- idlg\n", "must be a mapping"),
    "bad_tag": (b"seed: !!python/object:os.system ls\n", "invalid YAML"),
    "deep": (b"a: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nest"),
    "recursive": (b"datasets: &a [*a]\narchs: [lenet]\ndefenses: [none]\nattacks: [dlg]\n",
                  "refers to itself"),
    "alias_bomb": (b"a: &a [1,1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
                   b"c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\n"
                   b"e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
                   b"g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\n", "aliases"),
    "mixed_keys": (b"1: x\nattacks: [dlg]\n", "unknown suite key 1"),
    "timestamp": (b"seed: 2001-02-30\n", "invalid YAML"),
    # tags whose constructors raise what YAMLError is not (KeyError, IndexError, ...)
    "bool_tag": (b"seed: !!bool x\n", "invalid YAML"),
    "int_tag": (b"seed: !!int _\n", "invalid YAML"),
    "int_sign_tag": (b"seed: !!int +\n", "invalid YAML"),
    "timestamp_tag": (b"seed: !!timestamp x\n", "invalid YAML"),
    # PyYAML's "could not find expected ':'" alone did not say what was wrong
    "long_key": (b"seed: 0\n" + b"k" * 1100 + b": 1\n",
                 "line 2 is 1103 characters long; a YAML key may be at most 1024"),
    "long_flow_key": (b"attacks: {" + b"k" * 1100 + b": 1}\n", "at most 1024"),
}


@pytest.mark.parametrize("case", sorted(FILES))
def test_files_that_are_not_suites(case: str, tmp_path: Path, capsys) -> None:
    data, message = FILES[case]
    path = tmp_path / f"{case}.yaml"
    path.write_bytes(data)
    line = one_line_error(capsys, str(path))
    assert str(path) in line and message in line


def test_a_folder_and_an_oversized_file_are_refused_at_once(tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    """At once: the size is checked before the YAML parser sees a byte (not timed: a shared
    machine's clock proves nothing)."""
    import bench.suite.read as read

    assert "is a folder" in one_line_error(capsys, str(tmp_path))
    big = tmp_path / "big.yaml"
    big.write_text(suite_text() + "# " + "x" * MAX_SUITE_BYTES + "\n")

    def no_parse(*args, **kwargs):
        raise AssertionError("an oversized suite reached the YAML parser")

    monkeypatch.setattr(read.yaml, "load", no_parse)
    line = one_line_error(capsys, str(big))
    assert "size limit" in line and str(big) in line


NON_FINITE = {
    "param_nan": ({"defenses": [{"noise": {"scale": float("nan")}}]}, "noise.scale"),
    "param_inf": ({"defenses": [{"noise": {"scale": float("inf")}}]}, "noise.scale"),
    "param_str_nan": ({"attacks": [{"dlg": {"lr": "nan"}}]}, "dlg.lr"),
    "timeout_nan": ({"timeout": float("nan")}, "timeout"),
    "timeout_inf": ({"timeout": float("inf")}, "timeout"),
    "success_psnr": ({"success_psnr": float("-inf")}, "success_psnr"),
    "success_rule": ({"success": {"metric": "psnr", "at_least": float("nan")}}, "at_least"),
    "client_lr": ({"client": {"mode": "fedsgd", "lr": float("nan")}}, "client[0].lr"),
    "utility_lr": ({"utility": {"lr": float("inf")}}, "utility.lr"),
    "huge_int": ({"defenses": [{"noise": {"scale": 10 ** 400}}]}, "noise.scale"),
}


@pytest.mark.parametrize("case", sorted(NON_FINITE))
def test_non_finite_numbers_are_rejected_at_load(case: str, tmp_path: Path, capsys) -> None:
    overrides, key = NON_FINITE[case]
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(**overrides))
    line = one_line_error(capsys, str(path))
    assert key in line and str(path) in line


def test_every_float_param_rejects_nan_and_inf() -> None:
    for p in (Param("x", float, 1.0), Param("y", float, 0.0, low=0.0, high=1.0)):
        for bad in (float("nan"), float("inf"), float("-inf"), "nan", "inf"):
            with pytest.raises(ParamError, match="finite"):
                p.validate(bad, "here")


def test_float_params_read_only_plain_numerals_from_text() -> None:
    """float() also took '1_0' (10), Arabic-Indic digits and padded text: none is a number a
    suite means; YAML 1.1's text forms of numbers (1e-3, .5, +2.) still read as numbers."""
    p = Param("lr", float, 1.0)
    for text, number in (("1e-3", 1e-3), (".5", 0.5), ("+2.", 2.0), ("-1E+2", -100.0)):
        assert p.validate(text, "here") == number
    for text in ("1_0", "\u0663", " 2 ", "2 ", "0x10", "1e", "", "e3", "1.2.3"):
        with pytest.raises(ParamError, match="expected float"):
            p.validate(text, "here")


def test_an_integer_written_as_a_float_names_the_integer() -> None:
    with pytest.raises(ParamError, match=r"expected an integer, got '1e3' \(write 1000\)"):
        Param("steps", int, 1).validate("1e3", "here")
    with pytest.raises(ParamError, match=r"expected an integer, got '1\.5'$"):
        Param("steps", int, 1).validate("1.5", "here")
    with pytest.raises(ParamError, match=r"got '9007199254740993e0'$"):  # past 2**53 a
        Param("steps", int, 1).validate("9007199254740993e0", "here")  # float's hint is off


MALFORMED = {
    "seeds_repeat": ({"seeds": [0, 0]}, "seeds"),
    "batch_repeat": ({"batch_size": [1, 1]}, "batch_size"),
    "batch_huge": ({"batch_size": 10 ** 12}, "batch_size"),
    "empty_grid": ({"attacks": [{"dlg": {"steps": []}}]}, "dlg.steps"),
    "grid_too_big": ({"attacks": [{"dlg": {"steps": list(range(1, 400)),
                                           "lr": [0.1 * i for i in range(1, 400)]}}]},
                     "combinations"),
    "victim_number": ({"victim": 5}, "victim"),
    "victim_empty": ({"victim": []}, "victim"),
    "grant_list": ({"grant": [["labels"]]}, "grant"),
    "budget_list": ({"budget": [1]}, "budget"),
    # a false value read as "none given" (``or {}``): ``perceptual: off`` kept LPIPS on
    "perceptual_off": ({"perceptual": False}, "perceptual: expected a mapping"),
    "perceptual_blank": ({"perceptual": ""}, "perceptual: expected a mapping"),
    # a declared key nothing read: report takes the weights from --fid-weights or the env
    "perceptual_fid_weights": ({"perceptual": {"fid_weights": "w.pth"}},
                               "perceptual.fid_weights is not a suite setting"),
    "budget_no": ({"budget": False}, "budget: expected a mapping"),
    "resources_zero": ({"resources": 0}, "resources: expected a mapping"),
    "grant_false": ({"grant": False}, "grant: expected a list"),
    "exclude_zero": ({"exclude": 0}, "exclude: expected a list"),
    # a rule on another modality's metric was replaced by the default on every cell, silently
    "success_text_on_images": ({"success": {"metric": "rouge1", "at_least": 0.5}},
                               "success.metric: rouge1 scores text and this suite has only "
                               "image datasets"),
    "success_psnr_on_text": ({"datasets": [{"pydoc": {"task": "classify", "seq_len": 4}}],
                              "archs": [{"transformer": {"width": 8, "layers": 1, "heads": 1}}],
                              "success_psnr": 25}, "success_psnr: psnr scores image"),
    # a hypothesis fuzz found it: the name's newline split the error over two lines
    "name_newline": ({"archs": {"\n": False}}, "archs[0].'\\n': expected a mapping of "
                     "parameters, got False"),
    "exclude_nested": ({"exclude": [{"attack": [["dlg"]]}]}, "exclude[0].attack"),
    # the chain's noise range upside down: it ran and finished "ok" (a bad-input hunt)
    "dmcmc_sigma_order": ({"attacks": [{"dmcmc": {"sigma_lo": 1.0, "sigma_hi": 0.5}}]},
                          "dmcmc: sigma_lo (1) must be below sigma_hi (0.5)"),
    # fedavg with a zero or an overflowing step: each ig cell "diverged", blaming the attack
    "fedavg_lr_zero": ({"client": {"mode": "fedavg", "lr": 0}}, "client[0]: lr 0 with fedavg"),
    "fedavg_lr_huge": ({"client": {"mode": "fedavg", "lr": 1e308}}, "client[0].lr"),
    # the utility track's model never moved, and its chance-level accuracy read as "ok"
    "utility_lr_zero": ({"utility": {"lr": 0}}, "utility.lr: 0 never moves the model"),
    # true excluded seed 1 and every batch of 1; "0" matched nothing, warned as {seed: 0}
    "exclude_seed_bool": ({"exclude": [{"seed": True}]}, "exclude[0].seed: expected a number"),
    "exclude_batch_bool": ({"exclude": [{"batch_size": [1, True]}]},
                           "exclude[0].batch_size: expected a number"),
    "exclude_seed_text": ({"exclude": [{"seed": "0"}]}, "exclude[0].seed: expected a number"),
    "name_path": ({"name": "../../etc"}, "name"),
    "param_key_number": ({"attacks": [{"dlg": {1: 2}}]}, "unknown parameter 1"),
    "defense_list_params": ({"defenses": [{"prune": [1]}]}, "defenses[0].prune"),
    "chain_empty": ({"defenses": [{"chain": []}]},  # "expected a list" of a list
                    "chain: expected a non-empty list of defenses, got an empty list"),
    "chain_number": ({"defenses": [{"chain": 5}]},  # had said "a mapping of parameters"
                     "defenses[0].chain: expected a non-empty list of defenses, got 5"),
    "attack_number_params": ({"attacks": [{"dlg": 5}]},
                             "attacks[0].dlg: expected a mapping of parameters, got 5"),
    "chain_repeat": ({"defenses": [{"chain": [{"mixup": {"k": 2}}, {"mixup": {"k": 3}}]}]},
                     "mixup appears twice in one chain"),  # the first link's info was lost
    "datasets_none": ({"datasets": None}, "datasets"),
    "grid_repeat": ({"attacks": [{"dlg": {"steps": [2, 2]}}]}, "appears twice in its grid"),
    "client_grid_repeat": ({"client": {"lr": [0.1, 0.1]}},  # it was silently one value
                           "client[0]: lr=0.1 appears twice in its grid"),
    "client_grid_alike": ({"client": {"mode": "fedavg", "lr": [1, 1.0]}},
                          "client[0]: lr=1.0, mode=fedavg appears twice"),
    "victim_superscript": ({"victim": ["trained:\u00b2"]}, "victim"),  # isdigit(), not int()
    "seeds_huge": ({"seeds": 10 ** 19}, "seeds: expected a count"),  # len(range) overflowed
    "grant_repeat": ({"grant": ["labels", "labels"]}, "grant"),
    "victim_steps_huge": ({"victim": ["trained:" + "9" * 30]}, "more than 1000000 steps"),
    "seed_index_huge": ({"seeds": [2 ** 70]}, "seeds: expected a count"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_other_malformed_suites(case: str, tmp_path: Path, capsys) -> None:
    overrides, key = MALFORMED[case]
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, **overrides}))
    line = one_line_error(capsys, str(path))
    assert key in line


def test_a_base_60_number_is_no_number(tmp_path: Path, capsys) -> None:
    """YAML 1.1 read ``lr: 1:30`` as 90, a learning rate no one meant."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text() + "utility: {steps: 2, batch_size: 4, lr: 1:30}\n")
    line = one_line_error(capsys, str(path))
    assert "utility.lr" in line and "'1:30'" in line


def test_an_octal_number_is_no_number(tmp_path: Path, capsys) -> None:
    """YAML 1.1 read ``steps: 010`` as 8 (a bad-input hunt); ``0x10`` and ``0b10`` say what
    they are and stay numbers."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text() + "utility: {steps: 010, batch_size: 4}\n")
    line = one_line_error(capsys, str(path))
    assert line.endswith("utility.steps: expected an integer, got '010' (write 10)")
    from bench.suite.read import parse_yaml

    assert parse_yaml("a: [0x10, 0b10, 0, -7, 1_000, 010.5]", "t") == {
        "a": [16, 2, 0, -7, 1000, 10.5]}


def test_a_key_repeated_in_one_mapping_is_an_error(tmp_path: Path, capsys) -> None:
    """YAML would keep the last of two ``attacks:`` silently."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text() + "attacks: [idlg]\n")
    assert "the key 'attacks' appears twice" in one_line_error(capsys, str(path))


def test_overlapping_entries_are_merged(tmp_path: Path) -> None:
    """Separate entries whose grids overlap (or repeat, as YAML aliases do) give their union."""
    suite = parse_suite({**TINY_SUITE, "attacks": [{"ig": {"tv": [0.1, 0.01]}},
                                                   {"ig": {"tv": [0.1, 0.001]}}, "dlg", "dlg"]})
    assert [dict(a.params).get("tv") for a in suite.attacks] == [0.1, 0.01, 0.001, None]


@pytest.mark.parametrize("flags,needle", [
    (["--gpus-per-task", "-1"], "only with --executor ray"),
    (["--ray-address", "bogus"], "only with --executor ray"),
    (["--executor", "ray", "--gpus-per-task", "-1"], "--gpus-per-task: expected 0 or more"),
    (["--executor", "ray", "--cpus-per-task", "0"], "--cpus-per-task: expected more than 0"),
    (["--executor", "ray", "--max-retries", "-1"], "--max-retries"),
    (["--executor", "ray", "--cpus-per-task", "nan"], "(finite numbers), got nan"),
    (["--executor", "ray", "--cpus-per-task", "inf"], "(finite numbers), got inf"),
    (["--executor", "ray", "--gpus-per-task", "inf"], "--gpus-per-task: expected 0 or more"),
    # finer than Ray's unit, or past a C long: tracebacks from Ray after the setup
    (["--executor", "ray", "--cpus-per-task", "0.00001"], "at least Ray's unit 0.0001"),
    (["--executor", "ray", "--gpus-per-task", "1e-300"], "at least Ray's unit 0.0001"),
    (["--executor", "ray", "--gpus-per-task", "1e300"], "at most 1000"),
    (["--executor", "ray", "--max-retries", "99999999999999999999"],
     "--max-retries: expected 0 to 1000"),
    (["--executor", "ray", "--jobs", "2"], "--jobs: not with --executor ray"),
    (["--threads", "99999999999999999999"], "--threads: at most 4096, got 9999"),
    (["--jobs", "99999999999999999999"], "--jobs: at most 4096"),
    (["--jobs", "4097"], "--jobs"),
])
def test_a_dry_run_refuses_the_executor_options_a_run_refuses(flags, needle, tmp_path,
                                                               capsys) -> None:
    if "ray" in flags:  # Ray is a test dependency; without it the message names the extra
        pytest.importorskip("ray")
    path = tmp_path / "s.yaml"
    path.write_text(suite_text())
    assert needle in one_line_error(capsys, str(path), *flags)


def test_a_suite_named_by_its_file_needs_a_name_fit_for_a_folder(tmp_path: Path,
                                                                capsys) -> None:
    path = tmp_path / "we_ird%&<b>.yaml"
    path.write_text(suite_text())
    assert "name (from the file name; set name: to override)" in one_line_error(capsys,
                                                                                 str(path))
    path.write_text(suite_text(name="fine"))
    code, _, _ = cli(capsys, "run", str(path), "--dry-run")
    assert code == 0


def test_paths_that_cannot_be_written_are_one_line(tmp_path: Path, capsys) -> None:
    """An output path that is a file where a folder is needed, or a folder where a file is:
    one line naming the path, exit 2 (no traceback)."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text())
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    cases = [("run", str(path), "--out", str(a_file), "--jobs", "0"),
             ("merge", str(a_file), str(tmp_path)),
             ("export", str(tmp_path), "--format", "csv", "--output", str(tmp_path))]
    for args in cases:
        assert str(tmp_path) in one_line(capsys, *args)
    line = one_line(capsys, *cases[0])
    assert line == f"leakbench: error: {a_file}: exists and is not a folder", line


def test_a_file_that_cannot_be_created_is_named_not_its_temporary(tmp_path: Path,
                                                                  monkeypatch) -> None:
    """write_atomic writes through a temporary file; when that cannot be made (a read-only or
    virtual folder), the error names the file asked for, which the CLI prints."""
    import tempfile

    from bench.store import write_atomic

    def refuse(**kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.csv.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as caught:
        write_atomic(tmp_path / "x.csv", "a,b\n")
    assert caught.value.filename == str(tmp_path / "x.csv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,needle", [
    (["--num-classes", "0"], "--num-classes"),
    (["--num-classes", "-1"], "--num-classes"),
    (["--num-classes", "100000000000000000000"], "--num-classes: expected 1 to 100000"),
    (["--input-shape", "3,1,1"], "convnet needs inputs of at least 9×9"),  # two 3×3 pools
    (["--input-shape", "1,10000000000,10000000000"], "at most 4096 per size"),
    (["--input-shape", "3,4096,4096"], "4194304 values"),
    (["--param", "width=[1"], "--param width=[1: not a YAML value"),
    (["--param", "width=!!python/object/apply:os.system ['echo hi']"], "not a YAML value"),
    (["--param", "width=!!int _"], "--param width=!!int _: not a YAML value"),
    (["--param", "width=4", "--param", "width=8"], "--param width: given twice"),
    (["--param", "width=" + "[" * 5000], "--param width: not a YAML value (nested too deeply)"),
    (["--param", "width=" + "- " * 3000 + "1"], "--param width: not a YAML value (nested too "
                                                "deeply)"),
    # YAML 1.1's base-60 numbers, off in suites, had read 1:30 as 90 here (a CLI fuzz)
    (["--param", "width=1:30"], "convnet.width: expected an integer, got '1:30'"),
])
def test_rank_refuses_what_it_cannot_analyse(args, needle, capsys) -> None:
    assert needle in one_line(capsys, "rank", "convnet", *args)


@pytest.mark.parametrize("args", [
    ["mlp", "--param", "hidden=65536", "--param", "depth=16", "--input-shape", "1,8,8"],
    ["fcn3", "--param", "hidden1=100000", "--param", "hidden2=100000"],
])
def test_rank_refuses_a_network_too_large_to_build_before_building_it(args, capsys,
                                                                      monkeypatch) -> None:
    """Parameters within their ranges asked for 17 GB a layer (mlp) and 40 GB (fcn3)."""
    import attacks.rgap_rank

    monkeypatch.setattr(attacks.rgap_rank, "rank_report", lambda *a: 1 / 0)  # never built
    line = one_line(capsys, "rank", *args)
    assert f"rank {args[0]}: " in line and "parameters at these settings, above the " \
        "100,000,000 the analysis builds" in line


def test_rank_turns_torch_s_size_errors_into_one_line(capsys, monkeypatch) -> None:
    """A size past torch's integers raised a TypeError (the shape is bounded before now,
    the arch's own arithmetic may still overflow)."""
    def overflow(*args: object) -> str:
        raise TypeError("empty(): argument 'size' failed to unpack the object at pos 2")

    monkeypatch.setattr("attacks.rgap_rank.rank_report", overflow)
    assert "failed to unpack" in one_line(capsys, "rank", "mlp")


def test_executor_options_refuse_non_finite_shares() -> None:
    """nan passed every comparison (nan <= 0 is False) and reached Ray's int(cpus)."""
    from bench.executors import ExecutorOptions
    from bench.registry import LeakbenchError

    for options in (ExecutorOptions(cpus_per_task=float("nan")),
                    ExecutorOptions(cpus_per_task=float("inf")),
                    ExecutorOptions(gpus_per_task=float("nan"))):
        with pytest.raises(LeakbenchError, match="finite"):
            options.check("cpu")
    ExecutorOptions(cpus_per_task=0.5, gpus_per_task=0.0).check("cpu")


def test_a_missing_fid_weights_file_is_refused(tmp_path: Path, capsys) -> None:
    """report printed an n/a note and exit 0; prior-curve refuses its --inception file."""
    line = one_line(capsys, "report", str(ROOT / "results" / "quick"), "--fid-weights",
                    str(tmp_path / "nope.pt"))
    assert "--fid-weights: no weights file at" in line



def test_an_fid_weights_file_that_does_not_load_is_refused(tmp_path: Path, capsys,
                                                           inception_weights) -> None:
    """report scored nothing and exit 0, each group's FID n/a "torch-fidelity failed with"."""
    from bench.perceptual import fid_weights_problem

    (tmp_path / "garbage.pth").write_bytes(b"not a state dict")
    line = one_line(capsys, "report", str(tmp_path), "--fid-weights",  # refused before
                    str(tmp_path / "garbage.pth"))  # the folder is read: nothing written
    assert "garbage.pth is not a weights file torch can load (UnpicklingError)" in line
    import torch

    torch.save([1, 2], tmp_path / "list.pth")
    assert "holds no state dict" in fid_weights_problem(str(tmp_path / "list.pth"))
    assert fid_weights_problem(str(inception_weights)) is None
    # another network's state dict (here torchvision's Inception-v3 head) had been taken:
    # every group n/a "Error(s) in loading state_dict", exit 0 (a bad-input hunt)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(32, 3, 3, 3),
                "fc.weight": torch.zeros(1000, 2048)}, tmp_path / "other.pt")
    line = one_line(capsys, "report", str(tmp_path), "--fid-weights", str(tmp_path / "other.pt"))
    assert "is not torch-fidelity's Inception-v3 (FID) state dict: no fc.weight" in line
    torch.save({"a": torch.zeros(1)}, tmp_path / "dict.pt")
    assert "no Conv2d_1a_3x3.conv.weight" in fid_weights_problem(str(tmp_path / "dict.pt"))


def test_a_missing_inception_file_is_refused(tmp_path: Path, capsys) -> None:
    assert "--inception" in one_line(capsys, "prior-curve", "--inception",
                                     str(tmp_path / "nope.pt"), "--out", str(tmp_path / "out"))


@pytest.mark.parametrize("victim, needle", [
    ("trained:0", "trains for no step: write 'init'"),
    ("trained:05", "write 'trained:05' as 'trained:5'"),
])
def test_a_victim_spelled_as_another_is_refused(victim, needle, tmp_path, capsys) -> None:
    """trained:05 beside trained:5 ran one model twice under two seeds; trained:0 is init."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(victim=["trained:5", victim]))
    assert needle in one_line_error(capsys, str(path))


@pytest.mark.parametrize("flags, needle", [
    (["--executor", "inline", "--jobs", "3"], "--jobs 3: not with --executor inline"),
    (["--executor", "process", "--jobs", "0"], "--jobs 0 is inline: not with --executor process"),
])
def test_an_executor_and_a_jobs_count_that_contradict_are_refused(flags, needle, tmp_path,
                                                                   capsys) -> None:
    """Both ran, ignoring one of the two (inline warned of 3 workers' threads, then ran one
    cell at a time)."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text())
    for extra in ([], ["--dry-run"]):
        line = one_line(capsys, "run", str(path), "--out", str(tmp_path / "o"), *flags, *extra)
        assert needle in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("settings, needle", [
    ({"lpips_weights": "nope.pth"}, "perceptual.lpips_weights: no weights file at"),
    ({"lpips_weights": "."}, "perceptual.lpips_weights: no weights file at"),  # a folder
    ({"lpips_weights": "garbage.pth"}, "garbage.pth could not be loaded"),
])
def test_a_perceptual_weights_file_the_suite_names_must_load(settings, needle, tmp_path,
                                                              capsys) -> None:
    """Every cell ran and recorded LPIPS n/a, with a note that read "put the file in
    <the path given>"; report --fid-weights refused the same mistake."""
    (tmp_path / "garbage.pth").write_bytes(b"not a state dict")
    settings = {k: str(tmp_path / v) for k, v in settings.items()}
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(perceptual=settings))
    line = one_line(capsys, "run", str(path), "--jobs", "0", "--out", str(tmp_path / "o"))
    assert needle in line
    assert not list((tmp_path / "o").glob("records/*.json"))


@pytest.mark.parametrize("named, needle", [
    ("nope.pth", "$LEAKBENCH_LPIPS_WEIGHTS: no weights file at"),
    ("garbage.pth", "garbage.pth could not be loaded"),
])
def test_the_lpips_weights_variable_is_checked_as_the_suite_key_is(named, needle, tmp_path,
                                                                    capsys, monkeypatch) -> None:
    """A missing or broken file the variable named gave every record LPIPS n/a, exit 0."""
    (tmp_path / "garbage.pth").write_bytes(b"not a state dict")
    monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", str(tmp_path / named))
    path = tmp_path / "s.yaml"
    path.write_text(suite_text())
    line = one_line(capsys, "run", str(path), "--jobs", "0", "--out", str(tmp_path / "o"))
    assert needle in line
    assert not list((tmp_path / "o").glob("records/*.json"))
    monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", str(tmp_path / "nope.pth"))
    path.write_text(suite_text(perceptual={"lpips": False}))  # LPIPS off: not needed
    assert cli(capsys, "run", str(path), "--jobs", "0", "--out", str(tmp_path / "o2"))[0] == 0


def test_a_text_suite_needs_no_lpips_weights(tmp_path, capsys, monkeypatch) -> None:
    """LPIPS scores images only: a broken weights variable does not stop a text run."""
    monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", str(tmp_path / "nope.pth"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        **TINY_SUITE, "datasets": [{"pydoc": {"task": "classify", "seq_len": 6}}],
        "archs": [{"transformer": {"width": 16, "layers": 1, "heads": 1}}],
        "attacks": ["dager"]}))
    assert cli(capsys, "run", str(path), "--jobs", "0", "--out", str(tmp_path / "o"))[0] == 0


def test_prior_curve_refuses_an_out_that_is_a_file_before_it_samples(tmp_path: Path, capsys,
                                                                     monkeypatch) -> None:
    """It trained and sampled every configuration (minutes), then failed at its first write."""
    import bench.prior_curve

    def ran(*args, **kwargs):
        raise AssertionError("prior-curve sampled before it checked --out")

    monkeypatch.setattr(bench.prior_curve, "run_curve", ran)
    (tmp_path / "afile").write_text("x")
    for out in ("afile", "afile/sub"):
        line = one_line(capsys, "prior-curve", "--samples", "2", "--score-steps", "1",
                        "--out", str(tmp_path / out))
        assert line.endswith(f"{tmp_path / 'afile'}: exists and is not a folder")
    for seed in ("99999999999999999999999", "-1"):  # torch.manual_seed's overflow, after setup
        line = one_line(capsys, "prior-curve", "--seed", seed, "--out", str(tmp_path / "c"))
        assert f"--seed must be 0 to 2**63 - 1, got {seed}" in line
    # --attacks '' had meant no --attacks (a 2000-step score model, 1000 samples each, into
    # ./results/prior), --out '' the working directory; a file torch cannot load as
    # --inception was a TypeError after all the sampling
    for flag in ("--attacks", "--out", "--inception"):  # --inception '': the usual places,
        # as report --fid-weights '' had been (a bad-input hunt)
        line = one_line(capsys, "prior-curve", flag, "")
        assert line.endswith(f"prior-curve: {flag}: expected a path, got ''")
    (tmp_path / "junk.pt").write_text("not weights")
    line = one_line(capsys, "prior-curve", "--inception", str(tmp_path / "junk.pt"),
                    "--out", str(tmp_path / "c"))
    assert "--inception: " in line and "is not a weights file torch can load" in line


def test_prior_curve_refuses_a_text_dataset_and_a_folder_of_two(tmp_path: Path, capsys
                                                                ) -> None:
    """The score model on token ids crashed inside torch; pooled quality over two datasets
    raised a ValueError (a traceback) for a plain two-dataset run."""
    from bench.runner import run_suite

    line = one_line(capsys, "prior-curve", "--dataset", "pydoc", "--size", "0",
                    "--samples", "2", "--score-steps", "1", "--out", str(tmp_path / "c"))
    assert "pydoc is a text dataset" in line
    suite = make_suite(datasets=[{"digits": {"size": 8}}, {"photos": {"size": 8}}],
                       archs=[{"mlp": {"hidden": 8}}], attacks=[{"dlg": {"steps": 1}}])
    run_suite(suite, tmp_path / "two", jobs=0, progress=False)
    line = one_line(capsys, "prior-curve", "--attacks", str(tmp_path / "two"))
    assert "needs the records of one dataset, found 2" in line
    text = make_suite(datasets=[{"pydoc": {"task": "classify", "seq_len": 4}}],
                      archs=[{"transformer": {"width": 8, "layers": 1, "heads": 1}}],
                      attacks=[{"dlg": {"steps": 1}}])
    run_suite(text, tmp_path / "text", jobs=0, progress=False)
    line = one_line(capsys, "prior-curve", "--attacks", str(tmp_path / "text"))
    assert "needs image reconstructions" in line and "text dataset" in line


def test_an_exclude_naming_an_absent_component_is_an_error_with_a_hint(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(exclude=[{"attack": "dgl"}]))
    line = one_line_error(capsys, str(path))
    assert "exclude[0].attack" in line and "did you mean 'dlg'" in line
    path.write_text(suite_text(exclude=[{"attack": "idlg"}]))  # registered, not in the suite
    assert "not among the suite's attacks" in one_line_error(capsys, str(path))


def test_excludes_and_grants_that_do_nothing_are_warnings(tmp_path, capsys) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(exclude=[{"attack": "dlg", "batch_size": 8}],
                               grant=["bn_stats"]))
    code, out, err = cli(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 0
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(x.startswith("leakbench: warning: ") for x in lines)
    assert "exclude[0]" in lines[0] and "matches no cell" in lines[0]
    assert "bn_stats" in lines[1]
    # a rule that matches keeps quiet
    suite = make_suite(batch_size=[1, 2], exclude=[{"batch_size": 2}])
    assert suite.warnings == [] and len(list(iter_cells(suite))) == 1


MILLION = {**THOUSAND_PER_SEED, "seeds": 1000}


def test_a_million_cells_are_counted_refused_and_summarised_without_expanding(tmp_path,
                                                                             capsys) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(MILLION))
    t0 = time.perf_counter()
    suite = load_suite(str(path))
    assert count_cells(suite) == 1_000_000
    line = one_line_error_run(capsys, str(path), "--out", str(tmp_path / "o"))
    assert "1000000 cells" in line and "--max-cells" in line
    code, out, err = cli(capsys, "run", str(path), "--dry-run")
    assert code == 0 and len(out.splitlines()) < 20 and "above the limit" in err
    assert time.perf_counter() - t0 < 60  # measured: well under 2 s
    with pytest.raises(Exception, match="max-cells"):
        run_suite(suite, tmp_path / "o", jobs=0, device="cpu", progress=False)
    assert not (tmp_path / "o").exists()


def one_line_error_run(capsys, *args: str) -> str:
    code, _, err = cli(capsys, "run", *args)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_expansion_is_lazy_and_its_ids_are_the_canonical_digest() -> None:
    suite = parse_suite({**MILLION, "seeds": 20})
    cells = iter_cells(suite)
    tracemalloc.start()
    n = 0
    for cell in cells:
        n += 1
        if n % 997 == 0:
            assert cell.cell_id == digest(cell.identity())[:16]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert n == 20_000
    assert peak < 5_000_000  # bytes: the cells are not kept
    # its speed is a benchmark: tests/benchmarks/test_bench_suite_load.py


def test_a_large_dry_run_prints_a_summary_and_verbose_lists_every_cell(tmp_path, capsys):
    path = tmp_path / "mid.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": 300}))
    code, out, _ = cli(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 0 and len(out.splitlines()) < 20
    assert "summary by axis" in out and "300 values" in out and "300 to run" in out
    code, out, _ = cli(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run",
                       "--verbose")
    assert code == 0 and len(out.splitlines()) == 301


def test_a_dry_run_summary_counts_every_axis_and_each_kind_of_cell(tmp_path, capsys):
    """The client, defense and seed lines had no counts (a defense matched by object
    identity never counted), and utility cells counted under some axes only, unexplained."""
    path = tmp_path / "mix.yaml"
    path.write_text(yaml.safe_dump({
        **TINY_SUITE, "seeds": 101, "defenses": ["none", {"noise": {"scale": 0.1}}],
        "client": {"lr": [0.1, 0.2]}, "utility": {"steps": 1}}))
    code, out, _ = cli(capsys, "run", str(path), "--out", str(tmp_path / "o"), "--dry-run")
    lines = {line.split()[0]: line for line in out.splitlines()[1:-1]}
    assert code == 0, out
    # 101 seeds x 2 defenses x 2 clients attack cells, 101 x 2 utility cells (no client)
    assert lines["kind"].split()[1:] == ["attack", "404", "·", "utility", "202"]
    assert lines["defense"].endswith("none 303 · noise(scale=0.1) 303")
    assert lines["client"].count(" 202") == 2 and "lr=0.2" in lines["client"]
    assert lines["dataset"].endswith(" 606") and lines["seed"].split() == ["seed", "101", "values"]


def test_max_cells_allows_a_larger_grid(tmp_path, capsys) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "seeds": 30}))
    code, _, err = cli(capsys, "run", str(path), "--max-cells", "10", "--out",
                       str(tmp_path / "o"))
    assert code == 2 and "30 cells" in err
    assert len(list(iter_cells(load_suite(str(path))))) == 30
    assert ATTACKS.get("dlg")  # the registry is intact
    with pytest.raises(SuiteError):
        load_suite(str(tmp_path / "missing.yaml"))


def test_many_idle_excludes_are_one_warning_line() -> None:
    suite = make_suite(exclude=[{"batch_size": b} for b in range(2, 50)])
    [line] = suite.warnings
    assert line.startswith("48 exclude rules match no cell") and "45 more" in line


def test_hostile_megabyte_files_load_or_fail_in_bounded_time(tmp_path: Path) -> None:
    base = "datasets: [digits]\narchs: [lenet]\ndefenses: [none]\n"
    n = 120_000  # about 1 MB each
    texts = [base + "attacks:\n" + "  - dlg\n" * n,
             base + "attacks: [dlg]\nbatch_size: [" + "2," * (3 * n) + "1]\n",
             base + "attacks: [dlg]\nexclude:\n" + "  - {attack: dlg, seed: 5}\n" * (n // 4)]
    for i, text in enumerate(texts):
        path = tmp_path / f"h{i}.yaml"
        path.write_text(text)
        assert path.stat().st_size < 1_000_000
        t0 = time.perf_counter()
        try:
            load_suite(str(path))
        except SuiteError as e:
            assert "\n" not in str(e)
        assert time.perf_counter() - t0 < 60  # generous; measured 1.4-4 s on 2 busy cores


@pytest.mark.parametrize("flags", [["--executor", "ray", "--cpus-per-task", "nan"],
                                   ["--jobs", "0", "--threads", "99999999999999999999"]])
def test_out_of_range_options_are_refused_before_the_folder_is_touched(flags, tmp_path,
                                                                      capsys) -> None:
    """Refused before the lock is taken and any record written (the inline executor raised
    OverflowError in torch.set_num_threads, after the skipped cells' records)."""
    if "ray" in flags:
        pytest.importorskip("ray")
    path = tmp_path / "s.yaml"
    path.write_text(suite_text())
    one_line(capsys, "run", str(path), "--out", str(tmp_path / "out"), "--quiet", *flags)
    assert not (tmp_path / "out").exists()


def test_exclude_rules_that_leave_no_cell_are_warned_of(tmp_path, capsys) -> None:
    """The dry run printed "s: 0 cells —" and the run "nothing to run", exit 0, no word of
    why: a rule that excludes the whole matrix is most often a misplaced one."""
    path = tmp_path / "s.yaml"
    path.write_text(suite_text(attacks=["dlg"], exclude=[{"attack": "dlg"}]))
    n = count_cells(load_suite(str(path)))
    for extra in (["--dry-run"], ["--jobs", "0", "--quiet"]):
        code, out, err = cli(capsys, "run", str(path), "--out", str(tmp_path / "o"), *extra)
        assert code == 0, err
        assert f"the exclude rules leave none of the matrix's {n} cells: nothing runs" in err
        assert "—\n" not in out


@pytest.mark.parametrize("sub,link", [("records", False), ("cells", False), ("records", True)])
def test_a_file_where_the_run_keeps_records_or_pictures_is_refused_before_any_cell(
        sub, link, tmp_path: Path, capsys, monkeypatch) -> None:
    """The first save failed on it, after that cell's work (a bad-input hunt); a dangling
    link there too."""
    import bench.runner

    path, out = tmp_path / "s.yaml", tmp_path / "o"
    path.write_text(suite_text())
    out.mkdir()
    if link:
        (out / sub).symlink_to(tmp_path / "nowhere")
    else:
        (out / sub).write_text("")
    monkeypatch.setattr(bench.runner, "make_executor", lambda *a, **k: pytest.fail("ran"))
    line = one_line(capsys, "run", str(path), "--out", str(out), "--jobs", "0")
    assert line.endswith(f"{out / sub}: a symbolic link to {tmp_path / 'nowhere'}, which is "
                         "missing or a loop" if link else f"{out / sub}: exists and is not a "
                         "folder")


def test_the_dmcmc_sampler_refuses_an_upside_down_noise_range() -> None:
    from bench.registry import SAMPLERS

    with pytest.raises(ParamError, match=r"sigma_lo \(0.5\) must be below sigma_hi \(0.5\)"):
        SAMPLERS.get("dmcmc").cls(sigma_lo=0.5, sigma_hi=0.5)
    SAMPLERS.get("dmcmc").cls()  # the defaults are a range


def test_a_long_line_without_a_long_key_gets_no_key_hint() -> None:
    from bench.suite.read import parse_yaml

    with pytest.raises(SuiteError) as e:
        parse_yaml("attacks: [" + "dlg, " * 300 + "}\n", "f.yaml")
    assert str(e.value).endswith("invalid YAML at line 1: did not find expected node content")


@pytest.mark.parametrize("resources,needle", [
    ({"gpus_per_task": 0.00001}, "resources.gpus_per_task: expected 0 or more, at most 1000 "
                                 "and at least Ray's unit 0.0001"),
    ({"cpus_per_task": 1e300}, "resources.cpus_per_task"),
])
def test_a_suites_task_resources_are_held_to_rays_rules(resources, needle) -> None:
    """Within the schema's range, refused by Ray at the first task (a traceback)."""
    with pytest.raises(SuiteError, match=re.escape(needle)):
        parse_suite({**TINY_SUITE, "resources": resources})
    suite = parse_suite({**TINY_SUITE, "name": "mine", "resources": {"gpus_per_task": 0.0}})
    assert suite.resources["gpus_per_task"] == 0.0
    assert suite.name == "mine"  # the check's loop once rebound the suite's name


@pytest.mark.parametrize("args,expected", [
    (["site", "results/quick", "--out", ""], "site: --out: expected a path, got ''"),
    (["merge", "", "results/quick"], "merge: OUT: expected a path, got ''"),
    (["merge", "x", ""], "merge: DIRS: expected a path, got ''"),
    (["check", "results/paper-dlg", "--against-records", ""],
     "check: --against-records: expected a path, got ''"),
    (["diff", "", "results/quick"], "diff: A: expected a path, got ''"),
    (["leaderboard", ""], "leaderboard: DIR: expected a path, got ''"),
    # '' had meant no weights: a script's unset variable silently lost the FID columns
    (["report", "results/quick", "--fid-weights", ""],
     "report: --fid-weights: expected a path, got ''"),
])
def test_an_empty_path_is_refused_for_every_command(args, expected, capsys) -> None:
    """'' named the working directory: site built beside it and renamed over it."""
    assert one_line(capsys, *args).endswith(expected)


def test_an_empty_out_or_output_still_means_the_default(capsys, monkeypatch, tmp_path) -> None:
    """run --out '' is results/<suite>, table --output '' standard output, as before."""
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "run", "smoke", "--dry-run", "--out", "")
    assert code == 0 and "cells" in out
    code, out, _ = cli(capsys, "table", str(ROOT / "results" / "quick"), "--output", "")
    assert code == 0 and out.startswith("% Generated by `leakbench table`")
