from __future__ import annotations

import csv
import math
import shutil

import pytest

from bench.leaderboard import export, export_columns, records_frame, write_leaderboard
from bench.metrics import list_metrics
from bench.runner import run_suite
from bench.store import load_records
from helpers import make_suite, run_cli


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("lb")
    suite = make_suite(seeds=2, defenses=["none", {"prune": {"ratio": 0.3}}],
                       attacks=[{"dlg": {"steps": 3}}, {"idlg": {"steps": 3}}],
                       batch_size=[1, 2])
    run_suite(suite, out, jobs=0, device="cpu", progress=False)
    return out


def test_leaderboard_is_byte_identical_when_regenerated(results, tmp_path):
    first = write_leaderboard(results).read_bytes()
    copy = tmp_path / "copy"
    shutil.copytree(results / "records", copy / "records")
    second = write_leaderboard(copy).read_bytes()
    assert first == second
    assert write_leaderboard(results).read_bytes() == first
    tex = write_leaderboard(results, "latex").read_bytes()
    assert tex == write_leaderboard(copy, "latex").read_bytes()


def test_leaderboard_has_attack_and_defense_tables(results):
    text = write_leaderboard(results).read_text()
    assert "## Attacks · photos(size=16) · lenet · batch 1" in text
    assert "## Defenses · photos(size=16) · lenet · batch 1" in text
    assert "## Attacks · photos(size=16) · lenet · batch 2" in text
    assert "Environment:" in text and "torch:" in text
    for column in ("PSNR (dB)", "SSIM", "Label acc", "Success", "Median time (s)", "Failed"):
        assert column in text
    assert "dlg(steps=3)" in text and "prune(ratio=0.3)" in text


def test_defense_table_ranks_by_strongest_attack(results):
    text = write_leaderboard(results).read_text()
    section = text.split("## Defenses · photos(size=16) · lenet · batch 1")[1].split("##")[0]
    lines = [r for r in section.splitlines() if r.startswith("|")]
    column = [c.strip() for c in lines[0].split("|")].index("PSNR (dB)")
    rows = lines[2:]
    assert len(rows) == 2
    psnrs = [float(r.split("|")[column].split("±")[0]) for r in rows]
    assert psnrs == sorted(psnrs)


def test_latex_export(results):
    tex = write_leaderboard(results, "latex").read_text()
    assert "\\begin{tabular}" in tex and "\\caption{Attacks" in tex


def test_csv_export_has_one_row_per_cell(results):
    path = export(results)
    rows = list(csv.DictReader(path.open()))
    assert len(rows) == len(list((results / "records").glob("*.json")))
    for col in ("cell_id", "suite", "attack", "defense", "arch", "dataset", "batch_size", "seed",
                "status", "psnr", "ssim", "mse", "label_acc", "attack_seconds"):
        assert col in rows[0]
    frame = records_frame(load_records(results))
    assert list(rows[0]) == export_columns(frame)
    for metric in list_metrics(kind="per_item"):  # every registered metric is a column
        assert metric.name in rows[0]
    assert "picture" not in rows[0]
    assert {r["status"] for r in rows} == {"ok", "skipped"}


def test_cli_leaderboard_and_export(results):
    out = run_cli("leaderboard", str(results), "--format", "latex")
    assert out.returncode == 0 and out.stdout.strip().endswith("leaderboard.tex")
    out = run_cli("export", str(results), "--format", "csv")
    assert out.returncode == 0 and out.stdout.strip().endswith("cells.csv")
    out = run_cli("leaderboard", str(results / "nowhere"))
    assert out.returncode == 2 and out.stderr.endswith(": no such folder\n")


def test_a_defense_without_any_score_ranks_last_not_first():
    """Every attack failing against a defense is no evidence that the defense works."""
    import pandas as pd

    from bench.leaderboard import strongest_attacks

    summary = pd.DataFrame([
        {"defense": "none", "attack": "dlg", "psnr": 30.0},
        {"defense": "prune", "attack": "dlg", "psnr": 12.0},
        {"defense": "broken", "attack": "dlg", "psnr": None},
    ])
    assert list(strongest_attacks(summary)["defense"]) == ["prune", "none", "broken"]


def _curve_record(seed: int, curve: list[dict], attack: str = "ig") -> dict:
    return {"kind": "attack", "status": "ok", "defense_label": "none", "seed": seed,
            "dataset_label": "digits", "arch_label": "lenet", "batch_size": 1,
            "client": {"mode": "fedsgd", "bn_mode": "eval"}, "victim": "init",
            "attack_label": attack, "curve": curve}


def test_a_seed_that_stopped_early_enters_later_curve_points_with_its_final_estimate():
    from bench.leaderboard.curves import curve_frame

    ran = [{"grad_evals": 100, "seconds": 1.0, "psnr": 10.0},
           {"grad_evals": 200, "seconds": 2.0, "psnr": 20.0},
           {"grad_evals": 400, "seconds": 4.0, "psnr": 30.0, "final": True}]
    stopped = [{"grad_evals": 150, "seconds": 1.5, "psnr": 80.0, "final": True}]
    frame = curve_frame([_curve_record(0, ran), _curve_record(1, stopped)])
    by_point = {row.at: row for row in frame.itertuples()}
    assert by_point[100].n == 1 and by_point[100].psnr == 10.0  # seed 1 had not stopped yet
    assert by_point[200].n == 2 and by_point[200].psnr == 50.0  # seed 1 at its final 80 dB
    assert by_point[200].grad_evals == 175.0  # what each seed had spent by then
    assert by_point[math.inf].n == 2 and by_point[math.inf].psnr == 55.0
    only_final = curve_frame([_curve_record(0, stopped, "idlg")])
    assert list(only_final["at"]) == [math.inf] and list(only_final["psnr"]) == [80.0]
    closed_form = [{"grad_evals": 0, "seconds": 0.5, "psnr": 100.0, "final": True}]
    assert curve_frame([_curve_record(0, closed_form, "rgap")]).empty


def test_a_converged_seed_enters_later_points_at_its_own_stop_not_its_pass_time():
    from bench.leaderboard.curves import curve_frame

    ran = [{"grad_evals": 200, "seconds": 2.0, "psnr": 20.0},
           {"grad_evals": 400, "seconds": 9.0, "psnr": 30.0, "final": True}]
    # converged after 60 evaluations per restart (2 restarts: 120 in the snapshots' units) at
    # 0.5 s of its own; its final carries the pass's 9 s and all restarts' evaluations
    stopped = {**_curve_record(1, [{"grad_evals": 500, "seconds": 9.0, "psnr": 80.0,
                                    "final": True}]),
               "converged_at": {"grad_evals": 60, "seconds": 0.5},
               "attack_info": {"restarts_run": 2}}
    frame = curve_frame([_curve_record(0, ran), stopped])
    point = frame[frame["at"] == 200].iloc[0]
    assert point.n == 2 and point.psnr == 50.0
    assert point.grad_evals == 160.0 and point.seconds == 1.25


def test_the_curve_note_says_how_the_records_passes_were_divided():
    from bench.leaderboard.curves import curve_tables

    ran = [{"grad_evals": 200, "seconds": 2.0, "psnr": 20.0},
           {"grad_evals": 400, "seconds": 4.0, "psnr": 30.0, "final": True}]

    def note(*shares: str | None) -> str:
        records = [{**_curve_record(i, ran), **({"trial_batch": {"time_share": s}} if s else {})}
                   for i, s in enumerate(shares)]
        (table,) = curve_tables(records)
        return table.note

    assert "divided equally between its cells)" in note("equal", "equal")
    assert "by their trials' clocks)" in note("trial clock", "trial clock")
    # a record of no batched pass (a cell that ran alone) is said so, not called batched
    assert "own attack time: every cell ran alone)" in note(None, None)
    assert "equally between its cells; a cell that ran alone, its own time)" in note(None, "equal")
    # a failed pass's cells re-ran alone (``fallback``): they are not a batched pass's
    fell_back = [{**_curve_record(i, ran), "trial_batch": {"cells": ["a", "b"], "trials": 2,
                                                           "fallback": "RuntimeError: x"}}
                 for i in range(2)]
    (table,) = curve_tables(fell_back)
    assert "every cell ran alone)" in table.note
    assert "clocks or, where a record says so, equally" in note("trial clock", "equal")
    # each scenario's note reads its own records
    lenet = {**_curve_record(0, ran), "trial_batch": {"time_share": "trial clock"}}
    mlp = {**_curve_record(1, ran), "arch_label": "mlp", "trial_batch": {"time_share": "equal"}}
    notes = {t.title.split(", ")[1]: t.note for t in curve_tables([lenet, mlp])}
    assert "trials' clocks)" in notes["lenet"] and "equally between its cells)" in notes["mlp"]


def test_one_leaderboard_summarises_each_scenario_once(results, monkeypatch):
    import bench.leaderboard.aggregate as aggregate

    calls = []
    real = aggregate.summarize_attacks
    monkeypatch.setattr(aggregate, "summarize_attacks", lambda g: calls.append(1) or real(g))
    df = records_frame(load_records(results))
    alone = [len(list(aggregate.scenario_summaries(df))) for _ in range(2)]
    assert len(calls) == 2 * alone[0] > 0  # outside a scope, every call computes
    calls.clear()
    with aggregate.shared_summaries():
        first = list(aggregate.scenario_summaries(df))
        again = list(aggregate.scenario_summaries(df.copy()))  # the same cells, another frame
    assert len(calls) == len(first) == len(again)
    first[0][1]["suite"] = "edited"  # a caller's edit reaches no other caller
    first[0][2]["edited"] = 1
    assert "edited" not in set(again[0][1]["suite"]) and "edited" not in again[0][2]
    calls.clear()
    write_leaderboard(results)
    assert len(calls) == len(first)  # figures and tables share one summary per scenario


def test_records_without_client_or_victim_share_the_defaults_scenario():
    """A record without `client`/`victim` (absent and null read the same) ran the defaults;
    it was a scenario of its own with the same title and file names, so one gallery page and
    one figure overwrote the other's."""
    from bench.leaderboard import scenarios
    from helpers import ROOT

    records = sorted(load_records(ROOT / "results" / "quick"), key=lambda r: r["cell_id"])[:10]
    keys = {key for key, _ in scenarios(records_frame(records))}
    for r in records[::2]:
        del r["client"]
        r["victim"] = None
    stripped = scenarios(records_frame(records))
    assert {key for key, _ in stripped} == keys
    assert sum(len(g) for _, g in stripped) == 10


def test_a_folder_of_utility_records_only_says_so(tmp_path, capsys):
    """It said "no records under …" of a folder that holds records."""
    import json

    from bench.cli import main
    from helpers import ROOT

    (tmp_path / "records").mkdir()
    for path in sorted((ROOT / "results" / "defenses" / "records").glob("*.json")):
        if json.loads(path.read_text()).get("kind") == "utility":
            (tmp_path / "records" / path.name).write_bytes(path.read_bytes())
            break
    assert main(["leaderboard", str(tmp_path)]) == 2
    assert "no attack records under" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "(only 1 utility record(s)" in capsys.readouterr().err


def test_cells_of_other_grants_or_budgets_never_pool_into_one_row(results):
    # a folder merged from two suites: the same scenario and attack label, once with the labels
    # granted and a cap, once without: two rows, each of its own seeds, never one of both
    from bench.leaderboard import aggregate_frame
    from bench.leaderboard.curves import curve_frame

    plain = [r for r in load_records(results) if r["attack_label"] == "dlg(steps=3)"]
    granted = [{**r, "cell_id": "g" + r["cell_id"][1:], "granted": ["labels"],
                "budget": {"max_grad_evals": 50}} for r in plain]
    df = records_frame(plain + granted)
    assert set(df["attack"]) == {"dlg(steps=3) [granted none; no cap]",
                                 "dlg(steps=3) [granted labels; max_grad_evals=50]"}
    agg = aggregate_frame(df)
    assert list(agg.groupby("attack")["n"].sum()) == [len(plain), len(plain)]
    # alone, each store keeps its plain label (committed tables do not change)
    assert set(records_frame(plain)["attack"]) == {"dlg(steps=3)"}
    # a different success rule alone is named alone
    other_rule = [{**r, "cell_id": "s" + r["cell_id"][1:], "success_psnr": 30.0,
                   "success_rule": {"metric": "psnr", "at_least": 30.0, "at_most": None}}
                  for r in plain]
    assert set(records_frame(plain + other_rule)["attack"]) == {
        "dlg(steps=3) [success psnr>=20.0]", "dlg(steps=3) [success psnr>=30.0]"}
    # one attack keeps one label under every defense of its scenario: a granted copy under
    # one defense relabels the attack under all of them, so its rows still line up
    other_defense = [r for r in load_records(results) if r["attack_label"] == "dlg(steps=3)"
                     and r["defense_label"] != "none"]
    one = {**other_defense[0], "cell_id": "h" + other_defense[0]["cell_id"][1:],
           "granted": ["labels"]}
    relabelled = records_frame(load_records(results) + [one])
    dlg = relabelled[relabelled["attack_name"] == "dlg"]
    assert set(dlg.groupby("defense")["attack"].agg(lambda a: "dlg(steps=3) [granted none]" in
                                                   set(a))) == {True}
    # a malformed success rule or budget does not stop a table (the store validates neither)
    odd = [{**plain[0], "success_rule": "psnr>=20", "budget": "none"}] + plain[1:]
    assert len(records_frame(odd)) == len(plain)
    # the quality-against-compute curves key their rows the same way
    curved = [{**r, "status": "ok", "defense_label": "none",
               "curve": [{"grad_evals": 10, "seconds": 0.1, "psnr": 5.0},
                         {"grad_evals": 20, "seconds": 0.2, "psnr": 6.0, "final": True}]}
              for r in plain + granted]
    assert set(curve_frame(curved)["attack"]) == set(df["attack"])


def test_csv_export_keeps_every_digit(results, tmp_path):
    """A skipped cell makes pandas hold the count columns as floats; the export still writes
    a count of 1 234 567 evaluations and 1 395 281 920 bytes whole, and a PSNR exactly."""
    import json

    copy = tmp_path / "copy"
    shutil.copytree(results / "records", copy / "records")
    files = sorted((copy / "records").glob("*.json"))
    records = [json.loads(f.read_text()) for f in files]
    assert {r["status"] for r in records} == {"ok", "skipped"}  # some counts are None
    path, record = next((f, r) for f, r in zip(files, records) if r["status"] == "ok")
    record.update(grad_evals=1234567, peak_memory_bytes=1395281920)
    record["metrics"]["psnr"] = 12.345678901234567
    path.write_text(json.dumps(record))
    rows = {r["cell_id"]: r for r in csv.DictReader(export(copy).open())}
    row = rows[record["cell_id"]]
    assert row["grad_evals"] == "1234567" and row["peak_memory_bytes"] == "1395281920"
    assert float(row["psnr"]) == 12.345678901234567
    assert all(r["batch_size"] in ("1", "2") for r in rows.values())


def test_csv_export_leaves_counts_a_float_cannot_hold_whole_as_floats():
    """A whole float past 2**53 (a damaged count) made the Int64 cast raise: a traceback."""
    import pandas as pd

    from bench.leaderboard.export import exact_csv

    table = pd.DataFrame({"grad_evals": [2.0 ** 60, None], "peak_memory_bytes": [3.0, None]})
    assert exact_csv(table).splitlines() == ["grad_evals,peak_memory_bytes",
                                             f"{2.0 ** 60!r},3", ","]


def test_csv_export_writes_structures_as_json():
    """A text cell's pairs and its success rule were Python's repr (single quotes, None):
    no JSON reader took them."""
    import json

    import pandas as pd

    from bench.leaderboard.export import exact_csv

    table = pd.DataFrame({"success_rule": [{"metric": "rouge1", "at_most": None}, None],
                          "text_pairs": [[{"correct": [True, False]}], None], "psnr": [1.5, 2.0]})
    rows = list(csv.DictReader(exact_csv(table).splitlines()))
    assert json.loads(rows[0]["success_rule"]) == {"metric": "rouge1", "at_most": None}
    assert json.loads(rows[0]["text_pairs"]) == [{"correct": [True, False]}]
    assert rows[1]["success_rule"] == "" and rows[1]["psnr"] == "2.0"


def test_text_tables_show_converged_only_and_say_which_seeds_had_no_floor(tmp_path):
    """The image tables did both; the text tables left the seeds without a floor out of the
    means and n in silence, with no converged-only column (a statistics hunt)."""
    import json
    from pathlib import Path

    src = Path(__file__).resolve().parent.parent / "results" / "text" / "records"
    records = {p.name: json.loads(p.read_text()) for p in sorted(src.glob("*.json"))}
    first = next(iter(records.values()))
    same = [(n, r) for n, r in records.items()
            if (r["batch_size"], r.get("victim"), r["dataset_label"], r["arch_label"])
            == (first["batch_size"], first.get("victim"), first["dataset_label"],
                first["arch_label"])]
    row = [(n, r) for n, r in same if (r["defense_label"], r["attack_label"])
           == (first["defense_label"], first["attack_label"]) and r["status"] == "ok"][:2]
    assert len(row) == 2
    for _, r in same:
        r.pop("floor_metrics", None)
    for _, r in row:
        r.update(status="diverged", error="NaN", metrics=None)
    (tmp_path / "records").mkdir()
    for name, r in records.items():
        (tmp_path / "records" / name).write_text(json.dumps(r))
    text = write_leaderboard(tmp_path, "markdown").read_text()
    assert "ROUGE-1 converged only" in text
    assert "2 diverged or failed seed(s) had no floor to count at" in text


def test_scenarios_whose_titles_differ_only_in_punctuation_get_their_own_files():
    """imagefolder(folder=faces-small) and (folder=faces_small) both read faces_small: their
    tables linked one figure file, and the site kept one gallery page of the two (a site and
    outputs hunt). Titles of leakbench's own characters keep their plain names."""
    from bench.leaderboard.frames import scenario_slug

    def key(folder: str) -> tuple:
        return (f"imagefolder(folder={folder},size=16)", "lenet", 1, "fedsgd", "train", "init")

    assert scenario_slug(key("faces-small")) != scenario_slug(key("faces_small"))
    assert scenario_slug(key("faces small")) != scenario_slug(key("faces_small"))
    assert scenario_slug(("digits(size=16)", "convnet(width=16)", 1, "fedsgd", "eval",
                          "trained:200")) == (
        "digits_size_16_convnet_width_16_batch_1_BN_eval_victim_trained_200")


def test_notes_say_which_cells_they_show_and_count_the_utility_runs(tmp_path, capsys):
    """A text scenario with no undefended cell showed defended sentences under "Against no
    defense"; a leaderboard of attack and utility records counted only the attack cells as
    "Cells" while the site counted both (a site and outputs hunt)."""
    import json

    from bench.cli import main
    from helpers import ROOT

    text, mixed = tmp_path / "text", tmp_path / "mixed"
    for folder in (text, mixed):
        (folder / "records").mkdir(parents=True)
    for path in sorted((ROOT / "results" / "text" / "records").glob("*.json")):
        r = json.loads(path.read_text())
        if r["defense_label"] != "none" and r["batch_size"] == 1 and r["victim"] == "init":
            (text / "records" / path.name).write_bytes(path.read_bytes())
    kinds = {"attack": 0, "utility": 0}
    for path in sorted((ROOT / "results" / "defenses" / "records").glob("*.json")):
        kind = json.loads(path.read_text()).get("kind", "attack")
        if kinds[kind] < 3:
            kinds[kind] += 1
            (mixed / "records" / path.name).write_bytes(path.read_bytes())
    assert main(["leaderboard", str(text)]) == 0 and main(["leaderboard", str(mixed)]) == 0
    page = (text / "leaderboard.md").read_text()
    assert "Against no defense" not in page and "No cell ran without a defense" in page
    assert "attack cells and 3 (" in (mixed / "leaderboard.md").read_text()
