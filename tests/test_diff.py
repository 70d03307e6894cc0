"""``leakbench diff A B`` on copies of the committed ``results/quick`` records, doctored: a row
moved well outside its interval is a regression (exit 1) or an improvement (exit 0); removed,
added and re-statused cells are listed; the folders are only read; bad input exits 2."""

from __future__ import annotations

import io
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import main
from bench.diff import MISSING, NEW, REGRESSION, ROW, STATUS, diff
from bench.leaderboard import aggregate_frame, records_frame
from bench.leaderboard.frames import SCENARIO
from bench.store import load_records
from helpers import run_cli

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "results" / "quick"
LABELS = ROOT / "results" / "labels"


@pytest.fixture(scope="module")
def base() -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """The committed quick records, their frame and their aggregated rows."""
    records = load_records(QUICK)
    df = records_frame(records)
    return records, df, aggregate_frame(df)


def copy_records(src: Path, dst: Path) -> Path:
    """A results folder holding only ``src``'s records (diff reads nothing else)."""
    shutil.copytree(src / "records", dst / "records")
    return dst


def cells_of(df: pd.DataFrame, row: pd.Series) -> list[str]:
    keyed = df.assign(**{c: df[c].fillna("") for c in ["mode", "bn_mode", "victim"]})
    return list(keyed[(keyed[ROW] == row[ROW]).all(axis=1)]["cell_id"])


def rewrite(folder: Path, cell_id: str, edit: Callable[[dict], None]) -> None:
    path = folder / "records" / f"{cell_id}.json"
    record = json.loads(path.read_text())
    edit(record)
    path.write_text(json.dumps(record, indent=1, sort_keys=True))


def set_metric(record: dict, metric: str, value: float, per: str = "per_image") -> None:
    """Every image of the cell at ``value``: mean, worst, per-image list and success agree."""
    m = record["metrics"]
    m[metric] = m[f"{metric}_worst"] = value
    m[per][metric] = [value] * len(m[per][metric])
    if metric == "psnr":
        m["success"] = value >= (record.get("success_rule") or {}).get("at_least", 20.0)


def doctor_row(folder: Path, df: pd.DataFrame, row: pd.Series, metric: str,
               values: list[float]) -> list[str]:
    cells = cells_of(df, row)
    assert len(cells) == len(values) == row[f"{metric}_n"]
    for cid, v in zip(cells, values):
        rewrite(folder, cid, lambda r, v=v: set_metric(r, metric, v))
    return cells


def pick(agg: pd.DataFrame, metric: str, usable: Callable[[pd.Series], bool]) -> pd.Series:
    rows = [r for _, r in agg.iterrows() if pd.notna(r[f"{metric}_ci_low"]) and usable(r)]
    assert rows, "no row of results/quick fits the test"
    return rows[0]


def doctored_psnr_regression(base: tuple, tmp_path: Path) -> tuple[Path, pd.Series]:
    """A copy of the quick records with every seed of one row 20–24 dB below its interval."""
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["psnr_ci_low"] > 30)
    doctor_row(b, df, row, "psnr", [row["psnr_ci_low"] - 20 - i for i in range(5)])
    return b, row


def run(*args: str, capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = main(["diff", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def section(report: str, title: str) -> str:
    """The text of the report's ``## title`` section ('' when absent)."""
    parts = report.split("\n## ")
    found = [p for p in parts if p.startswith(title)]
    return found[0] if found else ""


def test_identical_folders_flag_nothing(tmp_path, capsys) -> None:
    b = copy_records(QUICK, tmp_path / "b")
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0, err
    assert "- regressions: 0" in out and "- improvements: 0" in out
    assert "- unchanged: 40" in out
    assert "\n## " not in out  # no table of changes at all
    assert out.rstrip().endswith("Result: no regressions.")


@pytest.mark.parametrize("metric", ["psnr", "mse"])
def test_a_doctored_regression_is_flagged_and_exits_1(metric, base, tmp_path, capsys) -> None:
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    if metric == "psnr":  # higher is better: every seed 20–22 dB below the interval
        row = pick(agg, "psnr", lambda r: r["psnr_ci_low"] > 30)
        values = [row["psnr_ci_low"] - 20 - 0.5 * i for i in range(int(row["psnr_n"]))]
    else:  # lower is better: every seed's MSE well above the interval
        row = pick(agg, "mse", lambda r: r["mse_ci_high"] < 0.05)
        values = [row["mse_ci_high"] + 0.1 + 0.01 * i for i in range(int(row["mse_n"]))]
    doctor_row(b, df, row, metric, values)

    code, out, err = run(str(QUICK), str(b), "--metric", metric, capsys=capsys)
    assert code == 1, err
    assert "- regressions: 1" in out and "- improvements: 0" in out
    table = section(out, "Regressions")
    assert row["defense"] in table and row["attack"] in table
    assert len([line for line in table.splitlines() if line.startswith("| ")]) == 2  # head, row
    assert f"- cells with a changed value, same status: {len(values)}" in out
    assert out.rstrip().endswith("Result: regressions found.")

    result = diff(QUICK, b, [metric])
    (flagged,) = [r for r in result.rows if r.change == REGRESSION]
    assert flagged.key == tuple(row[c] for c in ROW)
    assert math.isclose(flagged.b.mean, sum(values) / len(values))


def test_other_metrics_of_a_doctored_row_are_compared_apart(base, tmp_path, capsys) -> None:
    b, _ = doctored_psnr_regression(base, tmp_path)
    code, out, _ = run(str(QUICK), str(b), "--metric", "ssim,psnr", capsys=capsys)
    assert code == 1
    table = section(out, "Regressions")
    assert "| psnr " in table and "| ssim " not in table  # SSIM untouched: unchanged


def test_a_doctored_improvement_is_listed_and_exits_0(base, tmp_path, capsys) -> None:
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["psnr_ci_high"] < 60)
    doctor_row(b, df, row, "psnr", [row["psnr_ci_high"] + 20 + i for i in range(5)])
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0, err
    assert "- regressions: 0" in out and "- improvements: 1" in out
    table = section(out, "Improvements")
    assert row["defense"] in table and row["attack"] in table
    assert not section(out, "Regressions")


def test_removed_added_and_restatused_cells_are_listed(base, tmp_path, capsys) -> None:
    records, _, _ = base
    b = copy_records(QUICK, tmp_path / "b")
    gone, flipped = records[0]["cell_id"], records[1]["cell_id"]
    (b / "records" / f"{gone}.json").unlink()
    added = sorted((LABELS / "records").glob("*.json"))[0]
    shutil.copy(added, b / "records" / added.name)
    rewrite(b, flipped, lambda r: r.update(status="diverged"))

    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0, err  # the diverged seed enters at its floor; the intervals overlap
    assert gone in section(out, "Missing cells (only in A)")
    assert added.stem in section(out, "New cells (only in B)")
    status = section(out, "Status changes")
    assert flipped in status and "| ok " in status and "| diverged " in status
    assert "- missing cells: 1" in out and "- new cells: 1" in out
    assert "- cells with a changed status: 1" in out
    assert "- new rows: 1" in out  # the labels cell is a row of its own scenario
    assert "suites only in A: none; only in B: labels" in out

    result = diff(QUICK, b)
    kinds = {c.cell_id: c.change for c in result.cells}
    assert kinds == {gone: MISSING, added.stem: NEW, flipped: STATUS}


def test_a_row_only_in_a_is_missing(base, tmp_path, capsys) -> None:
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    row = agg.iloc[0]
    for cid in cells_of(df, row):
        (b / "records" / f"{cid}.json").unlink()
    code, out, _ = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0
    assert "- missing rows: 1" in out and "- missing cells: 5" in out
    assert row["attack"] in section(out, "Missing rows (only in A")


def test_csv_lists_every_row_and_cell_change(base, tmp_path, capsys) -> None:
    agg = base[2]
    b, _ = doctored_psnr_regression(base, tmp_path)
    code, out, _ = run(str(QUICK), str(b), "--format", "csv", capsys=capsys)
    assert code == 1
    table = pd.read_csv(io.StringIO(out))
    rows = table[table["kind"] == "row"]
    assert len(rows) == len(agg)
    assert rows["change"].value_counts().to_dict() == {"unchanged": len(agg) - 1,
                                                       "regression": 1}
    cells = table[table["kind"] == "cell"]
    assert set(cells["change"]) == {"value changed"} and len(cells) == 5


def test_diff_only_reads_a_folder_with_a_damaged_record(tmp_path, capsys) -> None:
    b = copy_records(QUICK, tmp_path / "b")
    bad = sorted((b / "records").glob("*.json"))[0]
    bad.write_text("{not json")
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0
    assert f"{bad}: damaged record" in err and "left in place" in err
    assert bad.exists() and not (b / "records" / "quarantine").exists()
    assert "- missing cells: 1" in out


def test_bad_input_exits_2_with_one_line(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    (empty / "records").mkdir(parents=True)
    cases = [([str(tmp_path / "nope"), str(QUICK)], "no such folder"),
             ([str(QUICK), str(tmp_path)], "holds no record store"),
             ([str(QUICK), str(empty)], "no records under"),
             ([str(QUICK), str(QUICK), "--metric", "psnrr"],
              "--metric: unknown metric 'psnrr' (did you mean 'psnr'?); expected one of psnr, "
              "ssim, mse"),  # as table's --value words it
             ([str(QUICK), str(QUICK), "--metric", ","], "--metric: expected a metric name, "
              "one of psnr"),
             ([str(QUICK), str(QUICK), "--metric", "fid"], "pooled metric")]
    for args, message in cases:
        code = main(["diff", *args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert len(err.strip().splitlines()) == 1 and message in err, (args, err)
    with pytest.raises(SystemExit) as raised:
        main(["diff", str(QUICK), str(QUICK), "--format", "html"])
    err = capsys.readouterr().err
    assert raised.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "invalid choice" in err


def test_the_command_line_exit_statuses(tmp_path) -> None:
    out = run_cli("diff", str(tmp_path / "nope"), "results/quick")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        f"leakbench: error: diff: A {tmp_path / 'nope'}: no such folder"]
    out = run_cli("diff", "results/quick", "results/quick")
    assert out.returncode == 0 and "Result: no regressions." in out.stdout, out.stderr


def test_text_rows_are_compared_on_their_own_headline(tmp_path, capsys) -> None:
    """Text rows have no PSNR: by default each row is compared on its leaderboard metric
    (ROUGE-1 for text), so a text row whose seeds all lost their sentences is a regression;
    ``--metric psnr`` on text folders is refused (no row has a value) instead of reporting
    no regression."""
    text = ROOT / "results" / "text"
    records = load_records(text)
    df = records_frame(records)
    agg = aggregate_frame(df)
    row = pick(agg, "rouge1", lambda r: r["rouge1_ci_low"] > 0.5)
    a = copy_records(text, tmp_path / "a")
    b = copy_records(text, tmp_path / "b")
    for cid in cells_of(df, row):
        rewrite(b, cid, lambda r: set_metric(r, "rouge1", 0.0, per="per_sequence"))
    found = diff(a, b)
    assert found.metrics == ["rouge1"]
    regressed = [r for r in found.rows if r.change == REGRESSION]
    assert [(r.key, r.metric) for r in regressed] == [(tuple(row[ROW]), "rouge1")]
    code, out, _ = run(str(a), str(b), capsys=capsys)
    assert code == 1 and "- regressions: 1" in out
    changed = {c.cell_id for c in found.cells if c.metric == "rouge1"}
    assert changed == set(cells_of(df, row))
    code, _, err = run(str(a), str(b), "--metric", "psnr", capsys=capsys)
    assert code == 2 and "--metric psnr has no value in any row" in err


def test_text_rows_without_a_victim_field_keep_their_headline(tmp_path) -> None:
    """Records without the optional ``victim`` (older or hand-made ones) fell back to PSNR:
    the row keys were filled as scenarios() fills them, the modality map's were not."""
    for side in ("a", "b"):
        folder = tmp_path / side / "records"
        folder.mkdir(parents=True)
        for path in sorted((ROOT / "results" / "text" / "records").glob("*.json"))[:20]:
            record = json.loads(path.read_text())
            record.pop("victim", None)
            (folder / path.name).write_text(json.dumps(record))
    found = diff(tmp_path / "a", tmp_path / "b")
    assert found.metrics == ["rouge1"]
    assert {r.change for r in found.rows} <= {"unchanged", "not judged"}


def time_out(record: dict) -> None:
    """The record a timed-out or dead worker leaves: written by the parent, no metrics and no
    floor_metrics."""
    record.update(status="timeout", metrics=None, error="exceeded the cell timeout of 60s")
    record.pop("floor_metrics", None)


def test_a_scenario_that_stops_finishing_is_a_regression(base, tmp_path, capsys) -> None:
    """Every cell of one scenario timed out in B: no seed has a value or a floor (n = 0), which
    was "not judged" and exit 0; A's rows had values, so each of them regressed."""
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    scenario = tuple(agg.iloc[0][c] for c in SCENARIO)
    keyed = df.assign(**{c: df[c].fillna("") for c in ["mode", "bn_mode", "victim"]})
    match = keyed[SCENARIO] == pd.Series(scenario, index=SCENARIO)
    cells = list(keyed[match.all(axis=1)]["cell_id"])
    for cid in cells:
        rewrite(b, cid, time_out)
    rows = [tuple(r[ROW]) for _, r in agg.iterrows() if tuple(r[SCENARIO]) == scenario]
    found = diff(QUICK, b)
    regressed = sorted(r.key for r in found.rows if r.change == REGRESSION)
    assert regressed == sorted(rows) and all(r.b.n == 0 for r in found.rows
                                              if r.change == REGRESSION)
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 1, err
    assert f"- regressions: {len(rows)}" in out
    assert f"- cells that finished in A and failed in B (error, timeout): {len(cells)}" in out
    assert out.rstrip().endswith("Result: regressions found.")
    found = diff(b, QUICK)  # the reverse: every seed of A failed, B's have values
    assert sorted(r.key for r in found.rows if r.change == "improvement") == sorted(rows)
    assert not found.regressed


def test_a_cell_that_stops_finishing_exits_1_even_where_its_row_holds(base, tmp_path,
                                                                     capsys) -> None:
    """One seed ok → error (its floor kept, so its row's interval may still overlap A's):
    a cell that finished no longer does, exit 1; ok → diverged is the attack's own outcome
    and exits 0 (test_removed_added_and_restatused_cells_are_listed)."""
    records, _, _ = base
    b = copy_records(QUICK, tmp_path / "b")
    cid = next(r["cell_id"] for r in records if r["status"] == "ok")
    rewrite(b, cid, lambda r: r.update(status="error", metrics=None, error="RuntimeError: x"))
    result = diff(QUICK, b)
    assert [c.cell_id for c in result.stopped_finishing()] == [cid]
    assert result.regressed
    code, out, _ = run(str(QUICK), str(b), capsys=capsys)
    assert code == 1
    assert "- cells that finished in A and failed in B (error, timeout): 1" in out
    assert cid in section(out, "Status changes")
    assert "- regressions: 0" in out  # the row held: the verdict says which kind
    assert out.rstrip().endswith("Result: regressions found: 1 cell(s) that finished in A "
                                 "failed in B, though no row's mean regressed.")


def test_a_utility_cells_accuracy_change_is_counted(tmp_path, capsys) -> None:
    defenses = ROOT / "results" / "defenses"
    b = copy_records(defenses, tmp_path / "b")
    utility = sorted(r["cell_id"] for r in load_records(defenses) if r.get("kind") == "utility"
                     and r["status"] == "ok")
    rewrite(b, utility[0], lambda r: r["metrics"].update(accuracy=0.1))
    code, out, _ = run(str(defenses), str(b), "--format", "csv", capsys=capsys)
    table = pd.read_csv(io.StringIO(out))
    cells = table[table["kind"] == "cell"]
    assert len(cells) == 1 and cells["change"].iloc[0] == "value changed"
    assert cells["cell_id"].iloc[0] == utility[0] and cells["metric"].iloc[0] == "accuracy"


def test_a_regression_is_seen_where_one_folder_has_cells_of_another_threat_model(
        base, tmp_path, capsys) -> None:
    """Row labels are decided over both folders: an extra granted cell in B relabelled B's
    row alone, so A's row was 'missing', B's 'new', and the regression went unseen."""
    b, row = doctored_psnr_regression(base, tmp_path)
    records, df, _ = base
    cid = cells_of(df, row)[0]
    extra = json.loads((QUICK / "records" / f"{cid}.json").read_text())
    extra.update(cell_id="f" + cid[1:], granted=["labels"])
    (b / "records" / f"{extra['cell_id']}.json").write_text(json.dumps(extra))
    code, out, _ = run(str(QUICK), str(b), capsys=capsys)
    assert code == 1
    assert "- regressions: 1" in out and "- missing rows: 0" in out


def test_two_folders_with_no_row_in_common_are_refused(capsys) -> None:
    """Two different suites printed "Result: no regressions." with exit 0, every row new or
    missing: a comparison against the wrong folder passed."""
    from helpers import ROOT

    assert main(["diff", str(ROOT / "results" / "quick"), str(ROOT / "results" / "text")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no row in common" in err and "quick" in err, err


def test_the_false_alarm_rate_the_report_states() -> None:
    """The report says two rows that did not change are flagged by chance about 1 time in
    200: the non-overlap of two 95% t-intervals of the same normal distribution, with the
    comparison the diff makes (clearly_better either way), 4 seeds a side. 12 000 simulated
    pairs: a rate near 0.0053 with a standard error of about 0.0007, against bounds 0.002
    and 0.01 (a fixed generator: the same draws on every machine)."""
    import numpy as np

    from bench.leaderboard.uncertainty import clearly_better, t_interval

    rng = np.random.default_rng(4)
    pairs = 12_000
    flagged = 0
    for a, b in zip(rng.normal(size=(pairs, 4)), rng.normal(size=(pairs, 4))):
        ia, ib = t_interval(a.tolist()), t_interval(b.tolist())
        flagged += clearly_better(ia, ib, True) or clearly_better(ib, ia, True)
    assert 0.002 < flagged / pairs < 0.01


def test_a_row_whose_seeds_all_diverge_in_b_is_a_regression_not_an_improvement(
        base, tmp_path, capsys) -> None:
    """Every seed ok → diverged: B's floors (a mid-grey guess's score) sat above A's low
    finished values, and the row was listed as an improvement, exit 0."""
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["n_ok"] == r["n"] and r["psnr_ci_high"] < 30)
    for cid in cells_of(df, row):  # diverged, and scored at a floor far above A's values
        rewrite(b, cid, lambda r: (r.update(status="diverged", error="NaN"),
                                   r["floor_metrics"].update(psnr=99.0)))
    result = diff(QUICK, b)
    (change,) = [r for r in result.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert change.change == REGRESSION and result.regressed
    code, out, _ = run(str(QUICK), str(b), capsys=capsys)
    assert code == 1 and "-0.00" not in out and "- improvements: 0" in out


def test_a_change_that_rounds_to_zero_prints_no_minus_zero() -> None:
    from bench.metrics.base import signed

    assert [signed(v, 2) for v in (-1e-9, 1e-9, 0.0, -0.126, 0.126)] == [
        "+0.00", "+0.00", "+0.00", "-0.13", "+0.13"]


def test_a_row_that_finishes_in_b_where_every_seed_of_a_diverged_is_no_regression(
        base, tmp_path, capsys) -> None:
    """The mirror of the rule above: A's floors above B's finished values had made the row a
    regression, exit 1."""
    _, df, agg = base
    a = copy_records(QUICK, tmp_path / "a")
    row = pick(agg, "psnr", lambda r: r["n_ok"] == r["n"] and r["psnr_ci_high"] < 30)
    for cid in cells_of(df, row):
        rewrite(a, cid, lambda r: (r.update(status="diverged", error="NaN"),
                                   r["floor_metrics"].update(psnr=99.0)))
    result = diff(a, QUICK)
    (change,) = [r for r in result.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert change.change == "improvement" and not result.regressed


def test_a_row_whose_seeds_stop_finishing_but_one_is_a_regression(base, tmp_path,
                                                                   capsys) -> None:
    """All seeds but one ok → diverged, their floors far above A's finished values: the
    row read as an improvement, exit 0, until its last seed diverged too (a hunt for silent
    wrong results, on the committed labels records). Where B finishes more, the mirror."""
    _, df, agg = base
    b = copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["n_ok"] == r["n"] and r["n"] >= 3
               and r["psnr_ci_high"] < 30)
    for cid in cells_of(df, row)[1:]:
        rewrite(b, cid, lambda r: (r.update(status="diverged", error="NaN"),
                                   r["floor_metrics"].update(psnr=99.0)))
    result = diff(QUICK, b)
    (change,) = [r for r in result.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert change.b.mean > change.a.mean and change.b.low > change.a.high  # by the intervals
    assert change.change == REGRESSION and result.regressed
    assert run(str(QUICK), str(b), capsys=capsys)[0] == 1
    mirror = diff(b, QUICK)
    (change,) = [r for r in mirror.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert change.change == "improvement" and not mirror.regressed


def test_finished_seeds_clearly_worse_are_a_regression_where_b_finished_more(
        base, tmp_path, capsys) -> None:
    """One seed diverged in A (at its own floor), every seed finished in B 17 dB lower: the
    share that finished rose, and the rule read the regression as an improvement, exit 0
    (a statistics review). A mixed change is judged by the intervals with floors."""
    _, df, agg = base
    a, b = copy_records(QUICK, tmp_path / "a"), copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: (r["dataset"], r["arch"], r["defense"], r["attack"]) == (
        "digits(size=16)", "lenet", "prune(ratio=0.3)", "idlg(steps=100)"))  # the review's
    cells = cells_of(df, row)
    seed0 = next(c for c in cells if int(df.loc[df["cell_id"] == c, "seed"].iloc[0]) == 0)
    rewrite(a, seed0, lambda r: r.update(status="diverged", error="NaN", metrics=None))
    values = [float(df.loc[df["cell_id"] == c, "psnr"].iloc[0]) - 17 for c in cells]
    doctor_row(b, df, row, "psnr", values)
    result = diff(a, b)
    (change,) = [r for r in result.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert change.change == REGRESSION and result.regressed
    assert run(str(a), str(b), capsys=capsys)[0] == 1
    (back,) = [r for r in diff(b, a).rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
    assert back.change == "improvement"


def test_the_finished_seeds_rule_is_symmetric(base, tmp_path) -> None:
    """A's two finished seeds at 30 dB (the lucky ones; three diverged at a floor of 10)
    against B's five at 25: A against B read a regression, B against A unchanged (a
    review). Each direction now mirrors the other."""
    _, df, agg = base
    a, b = copy_records(QUICK, tmp_path / "a"), copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["n_ok"] == r["n"] == 5)
    cells = cells_of(df, row)
    doctor_row(a, df, row, "psnr", [30.0, 30.2, 30.0, 30.0, 30.0])
    for cid in cells[2:]:
        rewrite(a, cid, lambda r: (r.update(status="diverged", error="NaN", metrics=None),
                                   r["floor_metrics"].update(psnr=10.0)))
    doctor_row(b, df, row, "psnr", [25.0, 25.1, 25.2, 24.9, 24.8])
    mirror = {REGRESSION: "improvement", "improvement": REGRESSION}
    there, back = ([r.change for r in d.rows if r.key == tuple(row[ROW]) and r.metric == "psnr"]
                   for d in (diff(a, b), diff(b, a)))
    assert len(there) == len(back) == 1 and back[0] == mirror.get(there[0], there[0])


def test_common_compares_a_subset_run_on_its_own_cells(base, tmp_path, capsys):
    """A nightly run holds some seeds of a suite's rows; against all the committed records its
    rows pooled other seeds than A's (identical cells read as a change of mean, and missing
    rows and cells filled the report). ``--common`` keeps the cells in both folders."""
    records, df, agg = base
    a = copy_records(QUICK, tmp_path / "a")
    b = copy_records(QUICK, tmp_path / "b")
    row = pick(agg, "psnr", lambda r: r["psnr_n"] >= 3)
    kept = cells_of(df, row)[:2]
    for cid in {r["cell_id"] for r in records} - set(kept):
        (b / "records" / f"{cid}.json").unlink()
    whole = diff(a, b)
    assert len(whole.cell_changes(MISSING)) == len(records) - 2
    assert any(r.change == MISSING for r in whole.rows)
    mine = diff(a, b, common=True)
    assert mine.common == 2 and not mine.cells and {r.change for r in mine.rows} <= {
        "unchanged", "not judged"}
    assert all(r.delta == 0 for r in mine.rows)
    code = main(["diff", str(a), str(b), "--common"])
    out = capsys.readouterr().out
    assert code == 0 and "- compared on the 2 cells found in both folders (--common)" in out
    other = copy_records(LABELS, tmp_path / "c")  # another suite's cells: none in common
    assert main(["diff", str(a), str(other), "--common"]) == 2
    assert "share no cell" in capsys.readouterr().err


def test_changed_values_are_named_largest_first_and_capped(base, tmp_path, capsys) -> None:
    """The count of cells with a changed value named none of them: a nightly run off in one
    cell could not tell which from its diff.md."""
    from bench.diff_report import SHOWN_VALUE_CHANGES

    records, _, _ = base
    b = copy_records(QUICK, tmp_path / "b")
    finished = sorted((r for r in records if r["status"] == "ok"
                       and r["metrics"]["psnr"] < 90), key=lambda r: r["cell_id"])  # 100: the cap
    moved = finished[:SHOWN_VALUE_CHANGES + 2]
    for i, r in enumerate(moved):  # 0.01 dB to 0.32 dB: inside every interval
        rewrite(b, r["cell_id"], lambda rec, i=i: set_metric(
            rec, "psnr", rec["metrics"]["psnr"] + 0.01 * (i + 1)))
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0, err
    assert f"- cells with a changed value, same status: {len(moved)}\n" in out
    table = section(out, "Changed values, same status")
    lines = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert len(lines) == SHOWN_VALUE_CHANGES
    assert lines[0].startswith(f"| {moved[-1]['cell_id']} ") and "| +0.32 |" in lines[0]
    assert lines[-1].startswith(f"| {moved[2]['cell_id']} ") and "| +0.03 |" in lines[-1]
    assert "… and 2 more of psnr (`--format csv` lists every one)" in table


def test_a_change_below_the_metrics_decimals_shows_its_size(base, tmp_path, capsys) -> None:
    """A 1e-9 dB change read "A 23.41 | B 23.41 | Δ +0.00": listed, yet alike on both sides."""
    records, _, _ = base
    b = copy_records(QUICK, tmp_path / "b")
    cell = next(r for r in sorted(records, key=lambda r: r["cell_id"])
                if r["status"] == "ok" and r["metrics"]["psnr"] < 90)
    rewrite(b, cell["cell_id"], lambda rec: set_metric(rec, "psnr",
                                                        rec["metrics"]["psnr"] + 1e-9))
    code, out, err = run(str(QUICK), str(b), capsys=capsys)
    assert code == 0, err
    line = next(x for x in section(out, "Changed values").splitlines()
                if x.startswith(f"| {cell['cell_id']} "))
    assert line.rstrip(" |").endswith("+1.0e-09"), line


def test_a_defenses_utility_accuracy_that_collapsed_is_a_regression(tmp_path, capsys) -> None:
    """A utility hunt: every seed of a defense's utility run at chance accuracy was a list
    of changed cells, and diff said "no regressions", exit 0."""
    defenses = ROOT / "results" / "defenses"
    b = copy_records(defenses, tmp_path / "b")
    utility = [r for r in load_records(defenses) if r.get("kind") == "utility"
               and r["status"] == "ok" and r["defense_label"] == "none"]
    scenario = (utility[0]["dataset_label"], utility[0]["arch_label"])
    collapsed = [r for r in utility if (r["dataset_label"], r["arch_label"]) == scenario]
    assert len(collapsed) >= 2
    for i, r in enumerate(collapsed):  # a little spread: an interval, far below A's
        rewrite(b, r["cell_id"], lambda rec, i=i: rec["metrics"].update(
            accuracy=rec["metrics"]["chance"] + 0.001 * i))
    code, out, err = run(str(defenses), str(b), capsys=capsys)
    assert code == 1, err
    assert "- utility rows (test accuracy; higher is better): 1 regressions, 0 improvements" \
        in out
    table = section(out, "Utility regressions (test accuracy)")
    lines = [x for x in table.splitlines() if x.startswith("| ")][1:]
    assert len(lines) == 1 and f"| {scenario[0]} " in lines[0] and "| none " in lines[0]
    assert out.rstrip().endswith("Result: regressions found.")
    code, out, _ = run(str(defenses), str(b), "--format", "csv", capsys=capsys)
    table = pd.read_csv(io.StringIO(out))
    rows = table[table["kind"] == "utility row"]
    assert list(rows[rows["change"] == "regression"]["defense"]) == ["none"]
    assert rows["setting"].notna().all()
    # B holding more runs of another setting (the one its tables then show) had left A's
    # setting's rows missing and B's new, the collapse unjudged, exit 0 (review)
    import copy
    import hashlib

    for r in [r for r in load_records(defenses) if r.get("kind") == "utility"]:
        for extra in range(2):
            x = copy.deepcopy(r)
            x["utility"] = {**x["utility"], "steps": 7}
            x["cell_id"] = "u" + hashlib.sha256(f"{r['cell_id']}{extra}".encode()
                                                ).hexdigest()[:15]
            x["seed"] = r["seed"] + 100 * (extra + 1)
            x["derived_seeds"] = {**x["derived_seeds"],
                                  "scenario": x["derived_seeds"]["scenario"] + 1000 + extra}
            (b / "records" / f"{x['cell_id']}.json").write_text(json.dumps(x))
    code, out, err = run(str(defenses), str(b), capsys=capsys)
    assert code == 1 and "regressions found" in out, err
    assert "- utility rows (test accuracy; higher is better): 1 regressions" in out
