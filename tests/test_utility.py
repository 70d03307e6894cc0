"""The utility track: training with defended updates, paired against `none`, in the store."""

from __future__ import annotations

import pytest
from PIL import Image

from bench.leaderboard import write_leaderboard
from bench.runner import plan, run_suite
from bench.store import load_records
from helpers import make_suite, run_cli, write_suite

UTILITY = {"steps": 60, "batch_size": 32, "lr": 0.5, "eval_size": 300}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("utility")
    suite = make_suite(seeds=2, datasets=[{"digits": {"size": 16}}],
                       archs=[{"mlp": {"hidden": 64}}],
                       defenses=["none", {"noise": {"scale": 0.5}}, {"prune": {"ratio": 0.5}}],
                       attacks=[{"dlg": {"steps": 3}}], utility=UTILITY)
    run_suite(suite, out, jobs=0, device="cpu", progress=False)
    return suite, out


def test_utility_cells_are_records_in_the_same_store(results):
    suite, out = results
    utility = [r for r in load_records(out) if r.get("kind") == "utility"]
    assert len(utility) == 3 * 2  # defenses × seeds (attacks and batch sizes do not multiply)
    assert all(r["status"] == "ok" for r in utility)
    assert all(r["cell_id"].startswith("u") for r in utility)
    # resumable: a second plan finds them done
    statuses = {c.cell_id: s for c, s in plan(suite, out)}
    assert all(statuses[r["cell_id"]] == "done" for r in utility)


def test_undefended_training_beats_chance_on_digits(results):
    _, out = results
    none = [r for r in load_records(out)
            if r.get("kind") == "utility" and r["defense_label"] == "none"]
    for r in none:
        assert r["metrics"]["accuracy"] > 3 * r["metrics"]["chance"]  # chance is 0.1
        assert r["metrics"]["update_cosine"] == pytest.approx(1.0, abs=1e-5)


def test_heavy_noise_costs_accuracy_and_decorrelates_updates(results):
    _, out = results
    by = {}
    for r in load_records(out):
        if r.get("kind") == "utility":
            by.setdefault(r["defense_label"], []).append(r["metrics"])
    acc = {k: sum(m["accuracy"] for m in v) / len(v) for k, v in by.items()}
    cos = {k: sum(m["update_cosine"] for m in v) / len(v) for k, v in by.items()}
    assert acc["noise(scale=0.5)"] < acc["none"]
    assert cos["noise(scale=0.5)"] < 0.5 < cos["prune(ratio=0.5)"] < 1.0


def test_defense_leaderboard_shows_accuracy_drop_and_front(results):
    _, out = results
    text = write_leaderboard(out).read_text()
    section = text.split("## Defenses")[1]
    assert "Accuracy" in section and "Δ acc" in section and "Pareto" in section
    assert "★" in section  # the undefended run is on the front: nothing beats its accuracy
    pictures = sorted((out / "plots").glob("privacy_utility_*.png"))
    assert len(pictures) == 1
    with Image.open(pictures[0]) as im:
        assert im.format == "PNG" and im.size[0] > 100
    assert f"(plots/{pictures[0].name})" in text
    assert write_leaderboard(out).read_text() == text


def test_batchnorm_running_statistics_follow_training(tmp_path):
    """Evaluation uses BN's running statistics: they must track the batches trained on (a model
    whose buffers stay at their initial values scores below chance after training)."""
    suite = make_suite(datasets=[{"digits": {"size": 16}}], archs=[{"convnet": {"width": 4}}],
                       attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 80, "batch_size": 32, "lr": 0.05, "eval_size": 200})
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    [record] = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    assert record["status"] == "ok", record.get("error")
    assert record["metrics"]["accuracy"] > 5 * record["metrics"]["chance"]


def test_dry_run_lists_utility_cells(tmp_path):
    path = write_suite(tmp_path / "s.yaml", datasets=[{"digits": {"size": 16}}],
                       defenses=["none", {"noise": {"scale": 0.1}}], utility=UTILITY)
    out = run_cli("run", str(path), "--out", str(tmp_path / "out"), "--dry-run")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    utility = [line for line in lines if line.startswith("u")]
    assert len(utility) == 2 and all("utility(batch_size=32" in line for line in utility)
    assert lines[-1].endswith("4 cells — 4 to run")


@pytest.mark.parametrize("secagg", [{"clients": 4}, {"clients": 3, "reduce": "sum"}])
def test_secure_aggregation_costs_no_utility_and_says_why(secagg, tmp_path):
    """secagg changes what the server observes, not what trains the model: its training must
    not get K clients' data while `none` gets one client's. A raw sum with nothing after it
    trains exactly as `none` (its K times and 1/K had rounded differently for K = 3)."""
    suite = make_suite(datasets=[{"digits": {"size": 16}}], archs=[{"mlp": {"hidden": 64}}],
                       defenses=["none", {"secagg": secagg}],
                       attacks=[{"dlg": {"steps": 1}}], utility=UTILITY)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    by = {r["defense_label"]: r for r in load_records(tmp_path) if r.get("kind") == "utility"}
    none = by.pop("none")
    (secagg,) = by.values()
    assert secagg["metrics"]["accuracy"] == none["metrics"]["accuracy"]
    assert secagg["metrics"]["update_cosine"] == none["metrics"]["update_cosine"]
    assert "protocol level" in secagg["utility_note"] and "utility_note" not in none


def test_noise_after_a_raw_secure_sum_trains_at_its_share_of_the_sum(tmp_path):
    """`noise` after `secagg(reduce: sum)` is added to the K clients' sum, which the server
    divides by K: its std on the step is s/K, as the attack track observes it. The utility
    track had added it to one client's update at full scale (a review's finding), so the
    chain trained as `noise` with K times the std."""
    suite = make_suite(datasets=[{"digits": {"size": 16}}], archs=[{"mlp": {"hidden": 64}}],
                       defenses=[{"noise": {"scale": 0.05}},
                                 {"chain": [{"secagg": {"clients": 4, "reduce": "sum"}},
                                            {"noise": {"scale": 0.2}}]},
                                 {"chain": [{"secagg": {"clients": 4}},
                                            {"noise": {"scale": 0.2}}]}],
                       attacks=[{"dlg": {"steps": 1}}], utility=UTILITY)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    by = {r["defense_label"]: r["metrics"] for r in records}
    assert all(r["status"] == "ok" for r in records), by
    quarter = by["noise(scale=0.05)"]
    summed = next(m for label, m in by.items() if "reduce=sum" in label)
    mean = next(m for label, m in by.items() if "secagg" in label and "sum" not in label)
    # the cosine of a noisy update with the clean one is set by the noise's std (the draws
    # differ: each chain seeds its own): s/K = 0.05 gives 0.13 here, s = 0.2 gives 0.05
    assert summed["update_cosine"] == pytest.approx(quarter["update_cosine"], rel=0.15)
    assert mean["update_cosine"] < 0.6 * quarter["update_cosine"]


def test_diverged_training_counts_at_chance_in_the_table(tmp_path):
    from bench.leaderboard import utility_frame, utility_summary

    suite = make_suite(datasets=[{"digits": {"size": 16}}], archs=[{"mlp": {"hidden": 64}}],
                       defenses=["none", {"noise": {"scale": 10.0}}],
                       attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 5, "batch_size": 8, "lr": 1e38, "eval_size": 50})
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    noisy = next(r for r in records if r["defense_label"] != "none")
    assert noisy["status"] == "diverged" and "non-finite" in noisy["error"]
    assert noisy["metrics"]["accuracy"] == noisy["metrics"]["chance"] == 0.1
    summary = utility_summary(utility_frame(records), "digits(size=16)", "mlp(hidden=64)")
    assert set(summary["defense"]) >= {"noise(scale=10)"}


def test_a_one_logit_model_is_at_chance_one_half(tmp_path):
    """FCN3 (one logit, scored on the label's parity) recorded chance 1/10 on digits, and a
    diverged run counted at 0.1 where guessing scores 1/2 (a utility-track hunt)."""
    suite = make_suite(datasets=[{"digits": {"size": 28, "channels": 1}}], archs=["fcn3"],
                       defenses=["none"], attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 2, "batch_size": 8, "lr": 1e38, "eval_size": 20})
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    (record,) = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    assert record["status"] == "diverged"
    assert record["metrics"]["accuracy"] == record["metrics"]["chance"] == 0.5


def test_a_dataset_without_a_held_out_split_has_no_utility_cells(tmp_path):
    """photos' test crops overlap its training crops by half: its "held-out" accuracy was
    scored on pixels the model trained on (a utility-track hunt)."""
    from bench.suite import iter_cells

    suite = make_suite(datasets=[{"photos": {"size": 16}}], archs=["lenet"], defenses=["none"],
                       attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 2, "batch_size": 8, "lr": 0.1, "eval_size": 20})
    cells = [c for c in iter_cells(suite) if type(c).__name__ == "UtilityCell"]
    assert cells and all("held-out test split" in c.skip_reason for c in cells)
    assert all(not c.skip_reason for c in iter_cells(suite) if type(c).__name__ != "UtilityCell")


def test_utility_pairs_on_the_scenario_not_the_seed_index():
    """Records of two settings in one folder share seed indices but not scenarios."""
    import pandas as pd

    from bench.leaderboard import utility_summary

    rows = [("none", 0, 0.9, 11), ("none", 0, 0.5, 22), ("prune", 0, 0.8, 11)]
    util = pd.DataFrame([{"dataset": "d", "arch": "a", "defense": d, "seed": s, "status": "ok",
                          "accuracy": acc, "update_cosine": 1.0, "scenario": sc}
                         for d, s, acc, sc in rows])
    summary = utility_summary(util, "d", "a").set_index("defense")
    assert summary.loc["prune", "drop"] == pytest.approx(0.1)  # against 0.9, not 0.5 or 0.7


def test_utility_of_different_training_settings_never_averages(tmp_path):
    """A store merging two utility settings (30 and 5 steps): the table shows one setting's
    accuracy, not the mean of both, and says which it left out."""
    from bench.leaderboard import render, utility_frame, utility_summary
    from bench.leaderboard.frames import records_frame

    common = dict(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                  defenses=["none", {"prune": {"ratio": 0.5}}], attacks=[{"dlg": {"steps": 1}}])
    long = make_suite(**common, seeds=2,
                      utility={"steps": 30, "batch_size": 8, "lr": 0.3, "eval_size": 50})
    short = make_suite(**common, seeds=1,
                       utility={"steps": 1, "batch_size": 8, "lr": 0.3, "eval_size": 50})
    run_suite(long, tmp_path, jobs=0, device="cpu", progress=False)
    run_suite(short, tmp_path, jobs=0, device="cpu", progress=False)
    records = load_records(tmp_path)
    util = utility_frame(records)
    assert util["setting"].nunique() == 2 and len(util) == 6
    summary = utility_summary(util, "digits(size=8)", "mlp(hidden=16)").set_index("defense")
    mine = util[util["setting"].str.contains("steps=30")]
    for defense, acc in mine.groupby("defense")["accuracy"].mean().items():
        assert summary.loc[defense, "accuracy"] == pytest.approx(acc)
        assert summary.loc[defense, "accuracy_n"] == 2
    assert summary.attrs["utility_left_out"] == {
        "batch_size=8, eval_size=50, lr=0.3, steps=1": 2}
    page = render(records_frame(records), "markdown", util=util)
    assert "left out: batch_size=8, eval_size=50, lr=0.3, steps=1 (2 records)" in page


TEXT_UTILITY = {"steps": 3, "batch_size": 8, "lr": 0.05, "eval_size": 20}


@pytest.mark.parametrize("task", ["classify", "lm"])
def test_text_datasets_train_and_score_through_the_utility_track(tmp_path, task):
    """Token ids go to the model as ids (not through the pixel normalisation), and a language
    model's accuracy is a share of scored positions, never above 1."""
    suite = make_suite(datasets=[{"pydoc": {"task": task, "seq_len": 8}}],
                       archs=[{"transformer": {"width": 16, "layers": 1, "heads": 2}}],
                       defenses=["none", {"noise": {"scale": 0.01}}],
                       attacks=[{"dlg": {"steps": 1}}], utility=TEXT_UTILITY)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    assert len(records) == 2
    for r in records:
        assert r["status"] == "ok", r.get("error")
        m = r["metrics"]
        assert 0.0 <= m["accuracy"] <= 1.0 and m["eval_size"] == 20
        if task == "lm":  # padding targets are not scored: fewer positions than 20 × 8
            assert 20 <= m["eval_positions"] < 20 * 8
        else:
            assert "eval_positions" not in m
    # the text Defenses table shows them (it had counted them in the header, then left them out)
    page = write_leaderboard(tmp_path).read_text()
    table = page.split("## Text defenses", 1)[1].split("\n## ", 1)[0]
    for column in ("| Accuracy", "| Δ acc", "| Update cos", "| n (utility)", "| Pareto"):
        assert column in table
    assert "★" in table and "lower ROUGE-1, higher accuracy" in table
    assert f"{records[0]['metrics']['accuracy']:.3f} ± n/a" in table


def test_language_model_accuracy_is_per_scored_position():
    """2 sequences × 4 positions, 2 of them padding targets: 4 of the 6 others are right."""
    import torch

    from bench.cells.utility import accuracy

    class Fixed(torch.nn.Module):
        def forward(self, x):  # predicts token 1 at every position
            logits = torch.zeros(*x.shape, 5)
            logits[..., 1] = 1.0
            return logits

    x = torch.ones(2, 4, dtype=torch.long)
    y = torch.tensor([[1, 1, 2, 0], [1, 3, 1, 0]])
    assert accuracy(Fixed(), x, y, pad_id=0) == (pytest.approx(4 / 6), 6)
    assert accuracy(Fixed(), x, y, chunk=1, pad_id=0) == (pytest.approx(4 / 6), 6)


def test_a_non_finite_update_has_no_cosine_and_stays_out_of_the_mean(tmp_path):
    """Noise of std 1e30 overflows fp16 to inf: the cosine of that update is NaN, which
    clamping to [-1, 1] used to record as a perfect 1.0."""
    from bench.leaderboard import utility_frame, utility_summary

    chain = {"chain": [{"noise": {"scale": 1e30}}, {"quantize": {"mode": "fp16"}}]}
    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=["none", chain], attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 3, "batch_size": 8, "lr": 0.1, "eval_size": 50})
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    records = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    (broken,) = [r for r in records if r["defense_label"] != "none"]
    assert broken["status"] == "diverged" and broken["metrics"]["diverged_at_step"] == 1
    assert broken["metrics"]["update_cosine"] is None
    assert broken["metrics"]["nonfinite_cosine_steps"] == 1
    summary = utility_summary(utility_frame(records), "digits(size=8)", "mlp(hidden=16)")
    row = summary.set_index("defense").loc[broken["defense_label"]]
    assert row["update_cosine_n"] == 0 and row["accuracy"] == pytest.approx(0.1)


def test_a_utility_run_does_not_depend_on_its_workers_float_mode():
    """Denormal flushing is per process: the attack path turned it on and the utility path
    left it as it found it, so a utility cell computed differently after an attack cell
    than in a fresh worker (LeNet, signSGD: accuracy 0.66 against 0.71)."""
    import torch

    from bench.cells.utility import run_utility
    from bench.suite import utility_cells
    from helpers import CPU

    suite = make_suite(datasets=[{"digits": {"size": 16}}],
                       defenses=[{"quantize": {"mode": "sign"}}],
                       utility={"steps": 300, "batch_size": 32, "lr": 0.3, "eval_size": 300})
    (cell,) = utility_cells(suite)
    results = []
    for flush in (False, True):
        torch.set_flush_denormal(flush)
        record = run_utility(cell, CPU)
        assert record.status == "ok", record.error
        results.append(record.metrics)
    assert results[0] == results[1]
