from __future__ import annotations

import pytest

from helpers import run_cli, write_suite

MALFORMED = {
    "unknown_attack": ({"attacks": ["dgl"]}, "unknown attack 'dgl'"),
    "wrong_type": ({"attacks": [{"dlg": {"steps": "lots"}}]}, "dlg.steps: expected an integer"),
    "unknown_key": ({"defences": ["none"]}, "unknown suite key 'defences'"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_suite_exits_2_with_one_line(case, tmp_path):
    overrides, message = MALFORMED[case]
    path = write_suite(tmp_path / f"{case}.yaml", **overrides)
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "out").exists()


def test_invalid_yaml_exits_2_with_one_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("attacks: [dlg\ndatasets: {photos\n")
    out = run_cli("run", str(path), "--dry-run")
    assert out.returncode == 2
    assert len(out.stderr.strip().splitlines()) == 1
    assert "invalid YAML" in out.stderr and "Traceback" not in out.stderr


def test_unknown_suite_name_and_bad_flags_exit_2():
    out = run_cli("run", "quik", "--dry-run")
    assert out.returncode == 2 and "did you mean 'quick'" in out.stderr
    out = run_cli("run", "smoke", "--device", "tpu")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1


def test_dry_run_lists_cells_with_status(tmp_path):
    path = write_suite(tmp_path / "s.yaml", batch_size=[1, 2],
                       attacks=[{"dlg": {"steps": 1}}, {"idlg": {"steps": 1}}])
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 5  # four cells and a summary
    assert sum(" to run " in line for line in lines[:-1]) == 3
    assert lines[-1].endswith("4 cells — 1 skipped, 3 to run")
    assert "skipped: iDLG's label rule holds only at batch size 1" in out.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
