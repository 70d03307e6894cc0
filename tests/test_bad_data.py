"""Preflight: before the first cell runs, every dataset is opened once; missing or damaged data
is one line naming the folder and the fix, exit status 2, and nothing is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from test_datasets_real import write_cifar10, write_idx, write_pickle

from bench.cli import main
from bench.datasets import torchvision_common
from bench.preflight import DataError, preflight_datasets
from bench.suite import parse_suite
from helpers import TINY_SUITE


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    torchvision_common.clear_cache()
    monkeypatch.delenv(torchvision_common.DATA_ENV, raising=False)


def run_with(tmp_path: Path, capsys, dataset: dict) -> tuple[int, str]:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, "datasets": [dataset]}))
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--jobs", "0", "--quiet",
                 "--no-leaderboard"])
    err = capsys.readouterr().err
    return code, err


def assert_one_line(code: int, err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], lines[0]


def test_a_missing_root_is_refused_before_any_cell(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nowhere"
    code, err = run_with(tmp_path, capsys, {"cifar10": {"root": str(missing), "size": 16}})
    assert_one_line(code, err, f"{tmp_path / 's.yaml'}: cifar10", str(missing), "root")
    assert not list((tmp_path / "out").glob("records/*.json"))


@pytest.mark.parametrize("dataset", [{"imagefolder": {"root": "nowhere"}},
                                     {"textfolder": {"root": "nowhere"}}])
def test_a_data_error_names_the_suite_file(tmp_path: Path, capsys, dataset) -> None:
    """Every other suite error starts with the file; a dataset's began with its name."""
    code, err = run_with(tmp_path, capsys, dataset)
    assert_one_line(code, err, f"leakbench: error: {tmp_path / 's.yaml'}: {next(iter(dataset))}")


def test_cifar_failing_its_checksums_is_one_line_and_verify_false_skips_them(tmp_path, capsys):
    write_cifar10(tmp_path / "data")
    root = str(tmp_path / "data")
    code, err = run_with(tmp_path, capsys, {"cifar10": {"root": root, "size": 16}})
    assert_one_line(code, err, "cifar10", "verify: false")
    assert not list((tmp_path / "out").glob("records/*.json"))
    spec = parse_suite({**TINY_SUITE, "datasets": [
        {"cifar10": {"root": root, "size": 16, "verify": False}}]}).datasets
    preflight_datasets(spec)  # loads: the checksums are really skipped


def test_missing_files_name_the_folder(tmp_path: Path, capsys) -> None:
    (tmp_path / "data").mkdir()
    code, err = run_with(tmp_path, capsys, {"cifar10": {"root": str(tmp_path / "data")}})
    assert_one_line(code, err, "cifar-10-batches-py", "download: true")


def test_a_truncated_pickle_says_what_is_wrong(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:40])
    specs = parse_suite({**TINY_SUITE, "datasets": [
        {"cifar10": {"root": str(tmp_path), "verify": False}}]}).datasets
    with pytest.raises(DataError, match="could not read the files") as e:
        preflight_datasets(specs)
    assert "\n" not in str(e.value)


def test_a_bad_pickle_shape_says_what_is_wrong(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_2", {"nothing": 1})
    specs = parse_suite({**TINY_SUITE, "datasets": [
        {"cifar10": {"root": str(tmp_path), "verify": False}}]}).datasets
    with pytest.raises(DataError, match="cifar10"):
        preflight_datasets(specs)


def test_damaged_idx_files_say_what_is_wrong(tmp_path: Path) -> None:
    import numpy as np

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
        write_idx(raw / name, np.zeros((2, 28, 28), np.uint8))
    for name in ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / name).write_bytes(b"\x00\x00\x08\x01garbage")
    specs = parse_suite({**TINY_SUITE, "datasets": [{"mnist": {"root": str(tmp_path)}}]}
                        ).datasets
    with pytest.raises(DataError, match="mnist"):
        preflight_datasets(specs)


def test_an_unreadable_image_in_a_folder_is_named(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "0.png")
    (tmp_path / "b" / "1.png").write_bytes(b"not a png")
    specs = parse_suite({**TINY_SUITE, "datasets": [{"imagefolder": {"root": str(tmp_path)}}]}
                        ).datasets
    with pytest.raises(DataError, match="1.png"):
        preflight_datasets(specs)


def test_a_damaged_test_image_is_caught_for_a_cell_granted_public_data(tmp_path, capsys):
    """An attacker granted ``public_data`` reads the test split (bench.public); preflight read
    only train, so a damaged test image failed every such cell as an error record."""
    from PIL import Image

    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(
                    tmp_path / "data" / split / cls / f"{i}.png")
    (tmp_path / "data" / "test" / "b" / "9.png").write_bytes(b"not a png")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        **TINY_SUITE, "grant": ["public_data"],
        "datasets": [{"imagefolder": {"root": str(tmp_path / "data"), "size": 8}}],
        "archs": [{"mlp": {"hidden": 8}}],
        "attacks": [{"dmcmc": {"sweeps": 1, "score_steps": 1, "score_width": 4}}]}))
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--jobs", "0", "--quiet",
                 "--no-leaderboard"])
    assert_one_line(code, capsys.readouterr().err, "imagefolder", "9.png")
    assert not list((tmp_path / "out").glob("records/*.json"))


@pytest.mark.parametrize("change, draws", [
    ({"batch_size": [1, 500]}, "500 a cell draws at once (batch_size)"),
    ({"batch_size": 300, "defenses": [{"secagg": {"clients": 2}}]},  # clients x batch
     "600 a cell draws at once (batch_size 300, 600 through the defense secagg(clients=2))"),
    ({"batch_size": 100, "defenses": [{"mixup": {"k": 5}}]},  # the k − 1 mixed-in images
     "500 a cell draws at once (batch_size 100, 500 through the defense mixup(k=5))"),
    ({"batch_size": 100, "defenses": [{"instahide": {"k": 5}}]},
     "500 a cell draws at once (batch_size 100, 500 through the defense instahide(k=5))"),
    ({"batch_size": 50, "defenses": [{"chain": [{"mixup": {"k": 3}},  # all distinct: 50 + 100
                                                {"secagg": {"clients": 7}}]}]},  # + 6 × 50
     "450 a cell draws at once (batch_size 50, 450 through the defense mixup(k=3)+secagg("
     "clients=7))"),
    ])
def test_a_batch_larger_than_the_train_split_is_refused_before_any_cell(change, draws,
                                                                        tmp_path, capsys):
    """Every such cell became an error record at run time (a bad-input hunt, a review); the
    line names the setting that asks for the items (it had said "lower batch_size" for the
    utility track's batch, with batch_size 1 already). MixUp's mixed-in images count too
    (a mixup k above the split had been an error record per cell)."""
    _refused_before_any_cell(tmp_path, capsys, change, {"photos": {"size": 32}},
                             f"the train split has 408 items, fewer than the {draws}")


def _refused_before_any_cell(tmp_path, capsys, change: dict, dataset: dict, line: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**TINY_SUITE, **change, "datasets": [dataset]}))
    code = main(["run", str(path), "--out", str(tmp_path / "out"), "--jobs", "0", "--quiet",
                 "--no-leaderboard"])
    assert_one_line(code, capsys.readouterr().err, next(iter(dataset)), line)
    assert not (tmp_path / "out" / "records").exists()


@pytest.mark.parametrize("change, draws", [
    ({"utility": {"steps": 1, "batch_size": 1500}},  # a utility cell's client batch
     "1500 a cell draws at once (utility.batch_size)"),
    ({"utility": {"steps": 1, "batch_size": 400}, "defenses": [{"mixup": {"k": 5}}]},  # a
     "1600 a cell draws at once (utility.batch_size 400, 1600 through the defense mixup(k=5))"),
    ])  # step's mixed-in images, drawn anew each step (digits: photos has no utility cells)
def test_a_utility_batch_larger_than_the_train_split_is_refused_before_any_cell(
        change, draws, tmp_path, capsys):
    _refused_before_any_cell(tmp_path, capsys, change, {"digits": {"size": 8}},
                             f"the train split has 1437 items, fewer than the {draws}")
