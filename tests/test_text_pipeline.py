"""Text through the harness: modality skips both ways, defenses on text updates, DP-SGD on
the transformer, and a text cell end to end through the runner and the leaderboard."""

from __future__ import annotations

import torch

from bench.leaderboard import write_leaderboard
from bench.pipeline import observe
from bench.runner import run_suite
from bench.store import load_records
from bench.suite import attack_cells
from helpers import CPU, make_suite

TEXT = {"pydoc": {"task": "classify", "seq_len": 8}}
SMALL_T = {"transformer": {"width": 32}}


def reasons(**axes):
    return {(c.attack.name, c.defense_label, c.arch.name): c.skip_reason
            for c in attack_cells(make_suite(**axes))}


def test_image_components_skip_text_cells_and_text_components_skip_image_cells():
    text = reasons(datasets=[TEXT], archs=[SMALL_T, "lenet"],
                   defenses=["none", "mixup", "soteria", "prune"], attacks=["ig", "dager", "dlg"])
    assert "lenet works on image data only" in text["dager", "none", "lenet"]
    assert "ig works on image data only" in text["ig", "none", "transformer"]
    assert "mixup: mixup works on image data only" in text["dlg", "mixup", "transformer"]
    assert "soteria" in text["dager", "soteria", "transformer"]
    assert text["dager", "none", "transformer"] is None
    assert text["dlg", "prune", "transformer"] is None
    image = reasons(datasets=[{"digits": {"size": 12}}], archs=[SMALL_T, "mlp"],
                    attacks=["dager", "tag", "dlg"])
    assert "transformer works on text data only" in image["dlg", "none", "transformer"]
    assert "dager works on text data only" in image["dager", "none", "mlp"]
    assert "tag works on text data only" in image["tag", "none", "mlp"]
    assert image["dlg", "none", "mlp"] is None


def test_defenses_act_on_text_updates_and_dpsgd_runs_on_the_transformer():
    suite = make_suite(datasets=[TEXT], archs=[SMALL_T], batch_size=3, attacks=["dager"],
                       defenses=["none", {"noise": {"scale": 0.01}}, {"prune": {"ratio": 0.5}},
                                 {"topk": {"fraction": 0.1}}, "dpsgd"])
    updates = {c.defense_label: observe(c, CPU) for c in attack_cells(suite)}
    clean = updates.pop("none").obs.update.tensors
    for label, observed in updates.items():
        tensors = observed.obs.update.tensors
        assert [t.shape for t in tensors] == [t.shape for t in clean]
        assert any(not torch.equal(a, b) for a, b in zip(tensors, clean)), label
    dp = updates["dpsgd"].private.update.info
    assert dp["epsilon"] > 0 and len(dp["dp_per_sample_norms"]) == 3


def test_a_text_cell_end_to_end_through_the_runner_and_the_leaderboard(tmp_path):
    suite = make_suite(datasets=[TEXT], archs=[SMALL_T, "lenet"], batch_size=2,
                       attacks=["dager", {"tag": {"iterations": 3}}],
                       success={"metric": "rouge1", "at_least": 0.5})
    run_suite(suite, tmp_path, jobs=0, progress=False)
    records = {(r["attack"]["name"], r["arch"]["name"]): r for r in load_records(tmp_path)}
    ok = records["dager", "transformer"]
    assert ok["status"] == "ok" and ok["metrics"]["exact"] == 1.0
    assert ok["success_rule"]["metric"] == "rouge1" and ok["success_psnr"] is None
    assert ok["text_pairs"][0]["original"] and ok.get("picture") is None
    assert ok["floor_metrics"]["rouge1"] == 0.0
    assert records["tag", "transformer"]["status"] == "ok"
    assert records["dager", "lenet"]["status"] == "skipped"
    page = write_leaderboard(tmp_path).read_text()
    assert "## Text attacks · pydoc" in page and "## Sentences · pydoc" in page
    assert "PSNR" not in page.split("## Text attacks")[1]
    first = ok["text_pairs"][0]["original"][0]
    assert f"**{first}**" in page  # a recovered token marked correct


def test_a_text_success_rule_leaves_the_image_cells_of_the_suite_at_theirs(tmp_path):
    """A mixed suite judged by ROUGE-1: its image cells were error records after their attack
    had run (score() was handed the text rule)."""
    suite = make_suite(datasets=[{"digits": {"size": 8}},
                                 {"pydoc": {"task": "classify", "seq_len": 4}}],
                       archs=[{"mlp": {"hidden": 8}},
                              {"transformer": {"width": 8, "layers": 1, "heads": 1}}],
                       attacks=[{"dlg": {"steps": 8}}],
                       success={"metric": "rouge1", "at_least": 0.6})
    image_cells = [c for c in attack_cells(suite) if c.dataset.name == "digits"]
    run_suite(suite, tmp_path, jobs=0, progress=False)
    (record,) = [r for r in load_records(tmp_path)
                 if r["dataset"]["name"] == "digits" and r["status"] != "skipped"]
    assert record["status"] == "ok", record["error"]
    assert record["success_rule"]["metric"] == "psnr"
    assert record["metrics"]["success"] == (record["metrics"]["psnr"] >= 20)
    assert len(record["curve"]) >= 2  # snapshots scored by the images' rule too
    from bench.cells import RunOptions
    from bench.executors import failure_outcome

    cell = next(c for c in image_cells if c.cell_id == record["cell_id"])
    timed_out = failure_outcome(cell, "timeout", "cut", RunOptions(suite.success), 1.0)
    assert timed_out.record.to_json()["success_rule"]["metric"] == "psnr"
