"""Bad input a fifth hunt found (2026-12-05): flags and parameters with no upper bound, a
Ray port of non-ASCII digits, and a path holding a newline. Each is one line and exit
status 2 before any work, where it had been a traceback, a run of error records, or an
error split over two lines."""

from __future__ import annotations

import yaml

from helpers import TINY_SUITE, one_line


def test_prior_curve_bounds_samples_and_score_steps(capsys, monkeypatch, tmp_path):
    import bench.prior_curve

    def ran(*args, **kwargs):
        raise AssertionError("prior-curve started before it checked its flags")

    monkeypatch.setattr(bench.prior_curve, "run_curve", ran)
    out = str(tmp_path / "pc")
    for samples in ("1", "1000000000000000"):  # torch.randn of 10^15 images: a traceback
        line = one_line(capsys, "prior-curve", "--samples", samples, "--out", out)
        assert f"--samples must be 2 to 100000, got {samples}" in line
    for steps in ("0", "9223372036854775808"):  # range() overflowed a C ssize_t
        line = one_line(capsys, "prior-curve", "--score-steps", steps, "--out", out)
        assert f"--score-steps must be 1 to 1000000, got {steps}" in line


def test_a_ray_port_must_be_ascii_digits_in_range_even_in_a_dry_run(capsys, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump(TINY_SUITE))
    for address in ("127.0.0.1:6²", "localhost:٦٣٧٩", "localhost:9223372036854775808",
                    "localhost:0", "ray://head:99999"):
        line = one_line(capsys, "run", str(suite), "--executor", "ray", "--dry-run",
                        "--ray-address", address, "--out", str(tmp_path / "o"))
        assert f"--ray-address {address!r}: the port must be a number from 1 to 65535" in line
    from bench.executors.base import address_problem

    for address in ("auto", "[::1]", "ray://[::1]", "ray://head:10001/", "head", "[::1]:6379"):
        assert address_problem(address) is None, address  # Ray's to read


def test_the_address_check_and_the_reachability_probe_split_host_and_port_alike():
    from bench.executors.base import host_port

    assert host_port("ray://head:10001/") == ("head", "10001")
    assert host_port("[::1]:6379") == ("::1", "6379")
    assert host_port(":6379") == ("", "6379")
    for address in ("auto", None, "head", "[::1]", "ray://[::1]"):
        assert host_port(address) is None, address


def test_an_error_naming_a_path_with_a_newline_stays_one_line(capsys, tmp_path):
    folder = tmp_path / "a\nb"
    line = one_line(capsys, "table", str(folder))
    assert "a\\nb" in line
    from bench.registry import warn

    warn(f"left {folder} alone")  # a warning too
    assert capsys.readouterr().err == f"leakbench: warning: left {tmp_path}/a\\nb alone\n"


def test_dmcmc_seeds_and_noise_levels_past_what_runs_are_refused_at_load(capsys, tmp_path):
    """score_seed 2**64 and sigma_hi 1e39 were accepted, listed "to run", then written as
    error records (an overflow inside the cell) by a run that exited 0."""
    for params in ({"score_seed": 2 ** 64}, {"sigma_hi": 1e39}):
        suite = {**TINY_SUITE, "grant": ["public_data"], "datasets": [{"digits": {"size": 8}}],
                 "attacks": [{"dmcmc": {"sweeps": 0, "score_steps": 1, **params}}]}
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(suite))
        line = one_line(capsys, "run", str(path), "--dry-run", "--out", str(tmp_path / "o"))
        assert next(iter(params)) in line
