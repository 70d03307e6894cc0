"""Defects found by session 59's reviews, each pinned by a test that failed before its fix."""

from __future__ import annotations

import pytest

from bench.suite import SuiteError, attack_cells
from helpers import make_suite


@pytest.mark.parametrize("pair", [
    (["mixup", "dpsgd"], ["dpsgd", "mixup"]),
    ([{"prune": {"ratio": 0.3}}, "mixup"], ["mixup", {"prune": {"ratio": 0.3}}]),
    (["mixup", {"secagg": {"clients": 2}}], [{"secagg": {"clients": 2}}, "mixup"]),
])
def test_two_orders_of_one_procedure_are_refused(pair: tuple[list, list]) -> None:
    """Every batch transform runs before the update wherever its link stands, so these two
    chains are one procedure; they had been two defenses with two labels and two seeds, one
    defense split over two rows of the table."""
    with pytest.raises(SuiteError, match="run the same procedure"):
        make_suite(defenses=[{"chain": pair[0]}, {"chain": pair[1]}])


def test_update_links_in_another_order_stay_two_defenses() -> None:
    """Clipping then noise is not noise then clipping: both orders stay cells of their own,
    as do one data link beside two orders of update links."""
    noise, clip = {"noise": {"scale": 0.01}}, {"clip": {"max_norm": 1.0}}
    suite = make_suite(defenses=[{"chain": [clip, noise]}, {"chain": [noise, clip]},
                                 {"chain": ["mixup", clip, noise]},
                                 {"chain": [noise, "mixup", clip]}])
    assert len({c.defense_label for c in attack_cells(suite)}) == 4


@pytest.mark.parametrize("dataset", ["cifar10", "imagefolder", "textfolder"])
def test_a_relative_data_root_is_the_drivers_folder(dataset: str, tmp_path, monkeypatch
                                                    ) -> None:
    """A relative ``root`` had travelled to the workers as written, so a Ray worker started
    from another folder read another folder (or none) than the one the driver checked."""
    monkeypatch.chdir(tmp_path)
    suite = make_suite(datasets=[{dataset: {"root": "data"}}])
    assert suite.datasets[0].kwargs["root"] == str(tmp_path / "data")
    home = make_suite(datasets=[{dataset: {"root": "~/data"}}])  # each machine's own home
    assert home.datasets[0].kwargs["root"] == "~/data"
    weights = make_suite(perceptual={"lpips_weights": "w.pth"}).perceptual["lpips_weights"]
    assert weights == str(tmp_path / "w.pth")


def test_a_joined_ray_cluster_gets_the_drivers_data_and_cache(tmp_path, monkeypatch) -> None:
    """Only a cluster the run started got the driver's environment; one it joined ran its
    tasks with the worker nodes' own (no LEAKBENCH_DATA: every cell an error record, exit 0)."""
    ray = pytest.importorskip("ray")
    import torch

    from bench.executors import ExecutorOptions
    from bench.executors.ray import RayExecutor

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAKBENCH_DATA", "data")
    monkeypatch.setenv("LEAKBENCH_CACHE", "~/cache")
    monkeypatch.setenv("LEAKBENCH_LPIPS_WEIGHTS", " ")  # blank: unset, as its reader takes it
    monkeypatch.delenv("LEAKBENCH_FID_WEIGHTS", raising=False)
    seen: dict = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    RayExecutor(torch.device("cpu"), 60.0, options=ExecutorOptions(address="auto"))._connect()
    assert seen["address"] == "auto"
    assert seen["runtime_env"] == {"env_vars": {"LEAKBENCH_DATA": str(tmp_path / "data"),
                                                "LEAKBENCH_CACHE": "~/cache"}}
    started: dict = {}
    monkeypatch.setattr(ray, "init", lambda **kw: started.update(kw))
    RayExecutor(torch.device("cpu"), 60.0)._connect()  # a cluster the run starts: the same
    assert started["runtime_env"]["env_vars"]["LEAKBENCH_DATA"] == str(tmp_path / "data")


def test_photo_crops_larger_than_the_photos_are_refused_at_load() -> None:
    """size 128 at scale 64 cut no crop at all: every cell failed on torch.stack's
    "non-empty TensorList", which named nothing the suite said."""
    with pytest.raises(SuiteError, match="scale ≥ 256"):
        make_suite(datasets=[{"photos": {"size": 128, "scale": 64}}])
    suite = make_suite(datasets=[{"photos": {"size": 32, "scale": 64}}])  # one crop a row
    assert len(attack_cells(suite)) == 1


def test_an_unreachable_ray_head_is_one_line_without_a_progress_bar(tmp_path, capsys) -> None:
    """The run's progress bar had been drawn (0/1) before the executor joined the cluster,
    so the refusal came below an empty bar."""
    pytest.importorskip("ray")
    from helpers import one_line, write_suite

    suite = write_suite(tmp_path / "s.yaml")
    line = one_line(capsys, "run", str(suite), "--out", str(tmp_path / "out"),
                    "--executor", "ray", "--ray-address", "127.0.0.1:1")
    assert "127.0.0.1:1: nothing answers there" in line


def test_rgap_lets_the_box_choose_between_two_roots_that_both_fit() -> None:
    """A sigmoid layer under a LeakyReLU one: both roots of the top layer fit the layer below
    to rounding (residuals 1e-8 and 1e-9 in float64); the relative margin alone had dropped
    the true root for being 14× the other's, and returned the other, every pixel outside the
    box (−243 dB)."""
    import copy
    import math

    import torch
    from torch import nn

    from attacks.rgap import RGAP
    from bench.client import compute_update
    from bench.contracts import ClientSpec, Observation
    from bench.domains import PixelBox

    torch.manual_seed(6)
    shape = (3, 8, 8)
    model = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1, bias=False), nn.Sigmoid(),
                          nn.Conv2d(12, 16, 3, stride=2, padding=1, bias=False),
                          nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(256, 1, bias=False)
                          ).double()
    x = torch.rand(1, *shape, dtype=torch.float64)
    update = compute_update(model, x, torch.tensor([0]), ClientSpec())
    obs = Observation(model=copy.deepcopy(model), update=update, batch_size=1,
                      domain=PixelBox(shape, (0.0,) * 3, (1.0,) * 3), num_classes=10,
                      client=ClientSpec(), generator=torch.Generator().manual_seed(0))
    rec = RGAP().reconstruct(obs)
    residuals = sorted(r for r in rec.info["candidate_residuals"])
    assert residuals[1] < 1e-6 < residuals[2]  # two fits, two wrong signs
    assert len(rec.info["candidates_descended"]) == 2
    psnr = 10 * math.log10(1 / float(((rec.data.double() - x) ** 2).mean()))
    assert psnr > 60, psnr


def test_rgap_skips_a_layer_too_wide_for_dense_normal_equations() -> None:
    """cnn6 on 128-px photos has 50 700 unknowns in a layer's input (12×65×65): a 19 GiB
    float64 Gram matrix (and as much again in float32), which had been accepted and would
    exhaust the memory of most machines."""
    suite = make_suite(datasets=[{"photos": {"size": 128, "scale": 256}}],
                       archs=["cnn6"], attacks=["rgap"])
    cell = attack_cells(suite)[0]
    assert "50700 unknowns" in (cell.skip_reason or ""), cell.skip_reason
    fits = make_suite(datasets=[{"photos": {"size": 32}}], archs=["cnn6"], attacks=["rgap"])
    assert not attack_cells(fits)[0].skip_reason


@pytest.mark.parametrize("normalize", [False, True])
def test_a_dataset_stating_no_pixel_mean_is_flipped_about_mid_grey(normalize: bool) -> None:
    """A plug-in dataset without ``pixel_mean`` had no centre, so InstaHide flipped its
    non-negative [0, 1] pixels about 0, which absolute values undo (plain MixUp)."""
    import torch

    from bench.contracts import DatasetMeta
    from bench.data import input_centre

    mean, std = ((0.3, 0.4, 0.5), (0.2, 0.2, 0.2)) if normalize else ((0.0,) * 3, (1.0,) * 3)
    meta = DatasetMeta((3, 8, 8), 2, mean, std)
    centre = input_centre(meta, torch.zeros((), dtype=torch.float64))
    pixels = centre.flatten() * torch.tensor(std, dtype=torch.float64) + torch.tensor(mean)
    assert centre.shape == (1, 3, 1, 1) and pixels.tolist() == pytest.approx([0.5] * 3)


def test_rerun_refuses_records_ruled_on_lpips_without_its_weights(tmp_path, monkeypatch,
                                                                   capsys) -> None:
    """``run`` refuses a success rule on LPIPS where its weights are missing; ``rerun`` of
    such records had re-run every drawn cell into an error record ("success rule over
    'lpips', which score() does not compute"), exit 0."""
    import json

    from bench.runner import run_suite
    from bench.store import load_records
    from helpers import one_line

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.delenv("LEAKBENCH_LPIPS_WEIGHTS", raising=False)
    out = tmp_path / "out"
    run_suite(make_suite(seeds=2, attacks=[{"dlg": {"steps": 1}}]), out, jobs=0,
              device="cpu", progress=False)
    for record in load_records(out):
        record["success_rule"] = {"metric": "lpips", "at_most": 0.2}
        record.pop("success_psnr", None)
        (out / "records" / f"{record['cell_id']}.json").write_text(json.dumps(record))
    line = one_line(capsys, "rerun", str(out), "--sample", "1", "--jobs", "0")
    assert "the records' success rule is on lpips" in line and "LPIPS" in line


def test_a_path_parameter_must_be_text() -> None:
    """``Param(..., int, path=True)`` had been accepted, then raised AttributeError (a
    traceback) on the first value a suite gave it."""
    from bench.registry import Param

    with pytest.raises(TypeError, match="path=True needs type str"):
        Param("n", int, 5, path=True)


@pytest.mark.parametrize("raw,expected", [
    ([15175928.0, -15175927.0], [1, 0]),  # from a sign-quantised update on CNN6-d
    ([float("inf"), 0.2, float("nan")], [1, 0, 0]),
    ([3e9, 2.6, 0.4], [2, 1, 0]),
])
def test_label_counts_round_at_once_whatever_the_raw_counts(raw: list, expected: list
                                                           ) -> None:
    """Rounding moved one unit a loop step: a raw count of 15 million for a batch of one spun
    for minutes (a timeout record, or a hang with --jobs 0), an infinite one for ever."""
    import torch

    from attacks.labels import _round_counts

    total = sum(expected)
    counts = _round_counts(torch.tensor(raw), total, torch.zeros(len(raw), dtype=torch.bool))
    assert counts.tolist() == expected


def test_an_empty_public_split_is_refused_before_any_cell(tmp_path) -> None:
    """pydoc at seq_len 2 has one test sentence, a copy of a training one: the public split
    left none, and every cell granted it became an error record, exit 0."""
    from bench.registry import LeakbenchError
    from bench.runner import run_suite

    suite = make_suite(datasets=[{"pydoc": {"task": "lm", "seq_len": 2, "vocab_size": 8}}],
                       archs=[{"transformer": {"width": 8, "layers": 1, "heads": 2}}],
                       attacks=["frequent_words"], grant=["public_data"])
    with pytest.raises(LeakbenchError, match="its public split is empty"):
        run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    assert not list(tmp_path.glob("records/*.json"))


def test_a_suite_of_utility_cells_alone_runs_and_exits_0(tmp_path, capsys) -> None:
    """Its cells ran and were recorded, then the run exited 2 because the leaderboard had no
    attack record to rank (again on every resume)."""
    from bench.cli import main
    from helpers import write_suite

    suite = write_suite(tmp_path / "u.yaml", datasets=[{"digits": {"size": 8}}],
                        exclude=[{"attack": "dlg"}],
                        utility={"steps": 1, "batch_size": 2, "eval_size": 5})
    out = tmp_path / "out"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: no leaderboard: no attack records" in err
    assert len(list(out.glob("records/*.json"))) == 1
    assert main(["leaderboard", str(out)]) == 2  # asked for, it is still an error
