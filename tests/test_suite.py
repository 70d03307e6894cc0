from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench.suite import SuiteError, attack_cells, load_suite, parse_suite
from helpers import ROOT, make_suite


def test_expansion_is_the_cartesian_product():
    suite = make_suite(
        seeds=3, batch_size=[1, 2],
        archs=["lenet", "mlp"],
        defenses=["none", {"prune": {"ratio": [0.1, 0.3]}}, {"noise": {"scale": 0.01}}],
        attacks=[{"dlg": {"steps": [1, 2]}}],
    )
    cells = attack_cells(suite)
    assert len(cells) == 3 * 2 * 2 * 4 * 2  # seeds × batch × archs × defenses × attack grid
    assert len({c.cell_id for c in cells}) == len(cells)
    assert {c.defense_label for c in cells} == {"none", "prune(ratio=0.1)", "prune(ratio=0.3)",
                                                "noise(scale=0.01)"}


def test_excludes_remove_matching_cells():
    suite = make_suite(
        seeds=2, archs=["lenet", "mlp"], defenses=["none", {"prune": {"ratio": [0.1, 0.3]}}],
        exclude=[{"arch": "mlp", "defense": "prune"}, {"defense": "prune(ratio=0.1)"}],
    )
    cells = attack_cells(suite)
    # lenet: none + prune(0.3); mlp: none only → 3 combos × 2 seeds
    assert len(cells) == 6
    assert not any(c.arch.name == "mlp" and c.defense[0].name == "prune" for c in cells)
    assert not any(c.defense_label == "prune(ratio=0.1)" for c in cells)


def test_a_bn_mode_exclude_pairs_the_client_with_other_axes():
    suite = make_suite(seeds=2, batch_size=[1, 4], client={"bn_mode": ["train", "eval"]},
                       exclude=[{"batch_size": 4, "bn_mode": "eval"}])
    kept = {(c.batch_size, dict(c.client)["bn_mode"]) for c in attack_cells(suite)}
    assert kept == {(1, "train"), (1, "eval"), (4, "train")}
    assert len(attack_cells(suite)) == 3 * 2
    idle = make_suite(client={"bn_mode": "train"}, exclude=[{"bn_mode": "eval"}])
    assert idle.warnings == ["exclude[0] {bn_mode: eval} matches no cell: it does nothing"]
    # mode and bn_mode are keys of one client: each value exists, but no client has both
    apart = make_suite(client=[{"mode": "fedsgd"}, {"mode": "fedavg", "bn_mode": "eval"}],
                       exclude=[{"mode": "fedsgd", "bn_mode": "eval"}])
    assert len(attack_cells(apart)) == 2
    assert apart.warnings == ["exclude[0] {mode: fedsgd, bn_mode: eval} matches no cell: it "
                              "does nothing"]
    with pytest.raises(SuiteError, match=r"exclude\[0\]\.bn_mode: 'evl' is not a client "
                                         r"bn_mode \(did you mean 'eval'\?\)"):
        make_suite(exclude=[{"bn_mode": "evl"}])


def test_incompatible_cells_are_kept_as_skipped_with_reason():
    suite = make_suite(batch_size=[1, 2], attacks=[{"dlg": {"steps": 1}}, {"idlg": {"steps": 1}}])
    cells = attack_cells(suite)
    assert len(cells) == 4
    skipped = [c for c in cells if c.skip_reason]
    assert len(skipped) == 1
    assert skipped[0].attack.name == "idlg" and skipped[0].batch_size == 2
    assert "batch size 1" in skipped[0].skip_reason


def test_fedavg_cells_skip_attacks_that_do_not_unroll():
    suite = make_suite(client=[{"mode": "fedsgd"}, {"mode": "fedavg", "local_epochs": 2}])
    cells = attack_cells(suite)
    assert [bool(c.skip_reason) for c in cells] == [False, True]
    assert "fedavg client shares a delta" in cells[1].skip_reason


def test_cell_ids_are_stable_across_processes_and_runs():
    suite = load_suite("smoke")
    ids = [c.cell_id for c in attack_cells(suite)]
    assert ids == [c.cell_id for c in attack_cells(load_suite("smoke"))]
    code = ("import json; from bench.suite import attack_cells, load_suite; "
            "print(json.dumps([c.cell_id for c in attack_cells(load_suite('smoke'))]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={"PYTHONHASHSEED": "123", "PATH": ""}, check=True)
    assert json.loads(out.stdout) == ids


def test_cell_id_is_pinned_for_a_fixed_configuration():
    # The id is a hash of the canonical configuration; a change here breaks every stored
    # result's identity, so it must be deliberate.
    cell = attack_cells(make_suite())[0]
    assert cell.cell_id == "58f1831782efcd2d"


def test_seeds_derive_from_base_seed_and_identity():
    a = attack_cells(make_suite(seeds=2))
    b = attack_cells(make_suite(seeds=2, seed=7))
    assert a[0].derived_seeds() != a[1].derived_seeds()
    assert a[0].derived_seeds() != b[0].derived_seeds()
    # attacks and defenses on the same scenario share its private batch and model
    c = attack_cells(make_suite(defenses=["none", {"prune": {"ratio": 0.3}}],
                   attacks=[{"dlg": {"steps": 1}}, {"idlg": {"steps": 1}}]))
    assert len({x.derived_seeds()["scenario"] for x in c}) == 1
    # an attack starts from the same dummy data against every defense: paired comparisons
    attack_seeds = {(x.attack.name, x.defense_label): x.derived_seeds()["attack"] for x in c}
    assert attack_seeds["dlg", "none"] == attack_seeds["dlg", "prune(ratio=0.3)"]
    assert attack_seeds["idlg", "none"] == attack_seeds["idlg", "prune(ratio=0.3)"]
    assert attack_seeds["dlg", "none"] != attack_seeds["idlg", "none"]
    assert len({x.derived_seeds()["defense"] for x in c}) == 2


@pytest.mark.parametrize("raw, message", [
    ({"attacks": ["dgl"]}, r"attacks\[0\]: unknown attack 'dgl' \(did you mean 'dlg'"),
    ({"attacks": [{"dlg": {"steps": "many"}}]}, r"attacks\[0\]\.dlg\.steps: expected an integer"),
    ({"atacks": ["dlg"]}, r"unknown suite key 'atacks' \(did you mean 'attacks'"),
    ({"exclude": [{"atack": "dlg"}]}, r"exclude\[0\]: unknown axis 'atack'"),
    ({"grant": ["passwords"]}, r"grant: unknown capability 'passwords'"),
    ({"seeds": 0}, r"seeds: expected a count from 1"),
    ({"victim": ["trained"]}, r"victim: expected 'init' or 'trained:N'"),
    ({"client": {"mode": "fedprox"}}, r"client\[0\].mode: 'fedprox' is not one of"),
])
def test_malformed_suites_name_the_problem(raw, message):
    with pytest.raises(SuiteError, match=message):
        make_suite(**raw)


def test_missing_axis_is_an_error():
    with pytest.raises(SuiteError, match="suite key 'attacks' is missing"):
        parse_suite({"datasets": ["digits"], "archs": ["lenet"], "defenses": ["none"]})


@pytest.mark.parametrize("attacks", [
    [{"ig": {"iterations": 3, "snapshots": [2, 4]}}],  # a grid over it
    [{"dlg": {"snapshots": 2}}, {"dlg": {"snapshots": 8}}],  # two entries
])
def test_entries_differing_only_outside_the_identity_are_refused(attacks):
    # snapshots does not change a cell's id: the two variants' cells would share ids and one
    # record would overwrite the other (one record of two was lost before)
    with pytest.raises(SuiteError, match="differ only in snapshots, which does not change a "
                                         "cell's identity"):
        make_suite(seeds=2, attacks=attacks)
    suite = make_suite(seeds=2, attacks=[{"ig": {"iterations": [3, 4], "snapshots": 2}}])
    ids = [c.cell_id for c in attack_cells(suite)]
    assert len(ids) == len(set(ids)) == 4  # identity parameters still make a grid


def test_chains_expand_their_grids_in_order():
    suite = make_suite(defenses=[{"chain": [{"prune": {"ratio": [0.1, 0.2]}},
                                            {"noise": {"scale": 0.01}}]}])
    labels = [c.defense_label for c in attack_cells(suite)]
    assert labels == ["prune(ratio=0.1)+noise(scale=0.01)", "prune(ratio=0.2)+noise(scale=0.01)"]


def test_builtin_suites_load_and_smoke_is_small():
    from bench.suite import builtin_suites

    for name in builtin_suites():
        attack_cells(load_suite(name))
    assert len(attack_cells(load_suite("smoke"))) <= 12
    quick = load_suite("quick")
    names = {c.attack.name for c in attack_cells(quick)}
    assert {"dlg", "idlg"} <= names and len(quick.seeds) >= 3


def test_data_location_params_stay_out_of_the_identity():
    a = attack_cells(make_suite(datasets=[{"cifar10": {"root": "/data/a"}}]))[0]
    elsewhere = {"root": "/elsewhere", "download": True}
    b = attack_cells(make_suite(datasets=[{"cifar10": elsewhere}]))[0]
    assert a.cell_id == b.cell_id and a.derived_seeds() == b.derived_seeds()
    assert a.dataset.label == "cifar10"
    # but they travel with the cell to the worker that loads the data
    from bench.cells.attack import AttackCell as Cell

    assert Cell.from_json(a.to_json()).dataset.kwargs["root"] == "/data/a"


@pytest.mark.parametrize("victims", [["init", "trained:5"], ["trained:5", "init"]])
def test_a_skip_that_depends_on_the_victim_is_decided_per_victim(victims):
    """GradInversion's eval-mode prior needs data-trained running statistics: skipped on
    ``init``, run on ``trained:N``, whichever victim the suite lists first."""
    suite = make_suite(victim=victims, client={"bn_mode": "eval"}, grant=["bn_stats"],
                       archs=[{"convnet": {"width": 4}}],
                       attacks=[{"gradinversion": {"iterations": 1}}])
    skipped = {c.victim: bool(c.skip_reason) for c in attack_cells(suite)}
    assert skipped == {"init": True, "trained:5": False}
