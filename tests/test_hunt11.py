"""What session 53's hunts found in the command line's defaults and the learned-prior track:
each was a silent wrong result or a failure after minutes of work."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.cli import main
from helpers import ROOT, one_line


def cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    """The command's exit status and its stderr, run in this process."""
    code = main(list(args))
    return code, capsys.readouterr().err


@pytest.fixture
def no_sampling(monkeypatch):
    """prior-curve's work replaced by a note of where it would have written."""
    import bench.prior_curve

    seen: dict = {}

    def ran(dataset, params, out, samples, *args, **kwargs):
        seen.update(dataset=dataset, params=params, out=out, samples=samples)
        return []

    monkeypatch.setattr(bench.prior_curve, "run_curve", ran)
    return seen


def test_prior_curve_writes_by_default_where_the_committed_curve_lives(capsys, monkeypatch,
                                                                      tmp_path, no_sampling):
    # the default had been results/prior: samplers.{json,md,png} beside the prior suite's
    # records and leaderboard, never regenerating curves/digits16/
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "prior-curve")[0] == 0
    assert no_sampling["out"] == Path("results/prior/curves/digits16")
    assert (ROOT / "results" / "prior" / "curves" / "digits16" / "samplers.json").is_file()
    assert cli(capsys, "prior-curve", "--dataset", "photos", "--size", "8")[0] == 0
    assert no_sampling["out"] == Path("results/prior/curves/photos8")
    assert cli(capsys, "prior-curve", "--size", "0")[0] == 0  # the dataset's own size
    assert no_sampling["out"] == Path("results/prior/curves/digits")


def test_prior_curve_refuses_too_few_samples_for_inception_before_any_work(
        capsys, monkeypatch, inception_weights, no_sampling):
    # FID/KID in Inception's features need 10 images: with 2–9 samples the curve trained
    # its score model and ran a sampler (minutes), then failed on the first FID
    monkeypatch.setenv("LEAKBENCH_FID_WEIGHTS", str(inception_weights))
    line = one_line(capsys, "prior-curve", "--samples", "9", "--out", "/tmp/unused")
    assert line.endswith("prior-curve: --samples must be at least 10 with Inception features "
                         "(FID/KID pool 10 images or more), got 9")
    assert not no_sampling
    assert cli(capsys, "prior-curve", "--samples", "10", "--out", "/tmp/unused")[0] == 0
    assert no_sampling["samples"] == 10


MILAN = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n" \
        "model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\ncpu family\t: 99\n"
GENOA = MILAN.replace("model\t\t: 1\n", "model\t\t: 17\n", 1)


def test_the_smoke_baselines_machine_names_the_cpus_generation_and_kernel_caps(monkeypatch):
    # "AMD EPYC" with AVX-512 names Zen 4 and Zen 5 alike in a virtual machine: the smoke
    # metrics stored on one were compared bit for bit on the other, and oneDNN/MKL kernels
    # capped by the environment (CI's AVX2 pass caps them) were not part of the machine
    from bench.provenance import KERNEL_CAPS, cpu_fingerprint, generation_of

    assert generation_of(MILAN) == "vendor_id=AuthenticAMD cpu_family=25 model=1 stepping=1"
    assert generation_of(GENOA) != generation_of(MILAN)
    assert generation_of("") == "unknown"
    for cap in KERNEL_CAPS:
        monkeypatch.delenv(cap, raising=False)
    plain = cpu_fingerprint()
    assert set(plain) >= {"cpu_model", "cpu_generation", "isa", "kernel_caps", "torch"}
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    capped = cpu_fingerprint()
    assert capped["kernel_caps"] == "ONEDNN_MAX_CPU_ISA=AVX2" and capped != plain


@pytest.mark.parametrize("suite,share", [("rgap", False), ("quick", True)])
def test_the_attack_tables_note_explains_label_accuracy_only_where_it_is_shown(tmp_path, suite,
                                                                             share):
    # rgap's one-logit victims have no label column: its note had still explained one
    import shutil

    from bench.leaderboard import write_leaderboard

    shutil.copytree(ROOT / "results" / suite / "records", tmp_path / "records")
    text = write_leaderboard(tmp_path).read_text()
    attack_tables = text.split("## Attacks", 1)[1].split("\n## ", 1)[0]
    assert ("| Label acc" in attack_tables) is share
    assert ("Wilson interval" in attack_tables) is share
