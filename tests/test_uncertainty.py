"""Numbers a reviewer would trust: 95% t-intervals, ranks shared where intervals overlap, n in
every table, and every seed counted (a diverged or failed seed at its floor)."""

from __future__ import annotations

import copy
import csv
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.claims.evaluate import claims_frame
from bench.leaderboard import (
    Interval,
    aggregate_columns,
    attack_tables,
    defense_tables,
    export,
    format_rank,
    records_frame,
    render,
    seed_values,
    shared_ranks,
    summarize_attacks,
    t_interval,
    utility_summary,
)
from bench.leaderboard.pivot import default_caption, pivot
from bench.leaderboard.uncertainty import (
    BATCH_FLOOR,
    MEASURED,
    MISSING,
    NO_FLOOR_VALUE,
    OWN_FLOOR,
    SCENARIO_FLOOR,
    pool_floors,
    wilson_interval,
)
from bench.store import load_records

RESULTS = Path(__file__).resolve().parent.parent / "results"

# t quantiles (two-sided 95%) from a printed table: t(0.975; 1) and t(0.975; 2)
T1, T2 = 12.7062, 4.3027


def test_t_interval_by_hand():
    iv = t_interval([10.0, 12.0, 14.0])  # mean 12, s = 2, n = 3
    assert iv.mean == 12.0 and iv.n == 3
    assert iv.half == pytest.approx(T2 * 2 / math.sqrt(3), abs=1e-3)  # 4.968
    assert (iv.low, iv.high) == pytest.approx((12 - 4.96828, 12 + 4.96828), abs=1e-4)
    two = t_interval([1.0, 3.0])  # mean 2, s = √2, half = t · √2/√2
    assert two.half == pytest.approx(T1, abs=1e-3)
    assert iv.format(2) == "12.00 ± 4.97"


def test_t_interval_of_identical_values_is_a_point():
    iv = t_interval([5.0, 5.0, 5.0])
    assert (iv.low, iv.mean, iv.high) == (5.0, 5.0, 5.0)


def test_one_seed_has_no_interval_and_none_has_no_mean():
    one = t_interval([7.0, None, float("nan")])  # missing values are no seeds
    assert one == Interval(7.0, None, None, 1)
    assert one.format(2) == "7.00 ± n/a"  # never ± 0
    assert t_interval([]).format(2) == "n/a" and t_interval([]).n == 0


def test_ranks_are_shared_where_intervals_overlap():
    a, b, c = Interval(20, 18, 22, 3), Interval(17, 15, 19, 3), Interval(10, 9, 11, 3)
    assert shared_ranks([a, b, c]) == [(1, 2), (1, 2), (3, 3)]
    assert [format_rank(*r) for r in shared_ranks([a, b, c])] == ["1–2", "1–2", "3"]
    # a chain: A overlaps B, B overlaps C, A is clearly above C
    a, b, c = Interval(12, 10, 14, 3), Interval(9, 7, 11, 3), Interval(6, 4, 8, 3)
    assert shared_ranks([a, b, c]) == [(1, 2), (1, 3), (2, 3)]
    # touching intervals overlap; separated ones do not
    assert shared_ranks([Interval(3, 2, 4, 3), Interval(1, 0, 2, 3)]) == [(1, 2), (1, 2)]
    assert shared_ranks([Interval(3, 2.5, 4, 3), Interval(1, 0, 2, 3)]) == [(1, 1), (2, 2)]


def test_ranks_without_an_interval_or_a_mean():
    one_seed = Interval(15, None, None, 1)  # no interval: separable from nothing
    a, c = Interval(20, 19, 21, 3), Interval(10, 9, 11, 3)
    assert shared_ranks([a, one_seed, c]) == [(1, 2), (1, 3), (2, 3)]
    unscored = Interval(None, None, None, 0)
    assert shared_ranks([a, c, unscored, unscored]) == [(1, 1), (2, 2), (3, 4), (3, 4)]
    # lower is better (defenses): the lower interval ranks first
    assert shared_ranks([c, a], higher_is_better=False) == [(1, 1), (2, 2)]


# --- a synthetic record set ------------------------------------------------------------------

def _template() -> dict:
    path = sorted((RESULTS / "quick" / "records").glob("*.json"))[0]
    return json.loads(path.read_text())


def _record(t: dict, n: int, attack: str, seed: int, status: str, psnr: float | None = None,
            floor: float | None = None, defense: str = "none") -> dict:
    r = copy.deepcopy(t)
    r.update(cell_id=f"{n:016x}", seed=seed, status=status, attack_label=attack,
             defense_label=defense, error=None if status == "ok" else f"{status}!",
             picture=None, arch_label="mlp", dataset_label="digits", batch_size=1,
             derived_seeds={"scenario": 1000 + seed, "attack": n, "defense": n},
             suite="synthetic")
    r["attack"] = {"name": attack, "params": {}, "shown": []}
    r["defense"] = [{"name": defense, "params": {}, "shown": []}]
    r["client"] = {"mode": "fedsgd", "bn_mode": "train"}
    r["victim"] = "init"
    r["metrics"] = None if psnr is None else {"psnr": psnr, "ssim": 0.5, "mse": 0.01,
                                              "label_acc": 1.0, "success": psnr >= 20}
    if floor is not None:
        r["floor_metrics"] = {"psnr": floor, "ssim": 0.0, "mse": 0.2}
    else:
        r.pop("floor_metrics", None)
    if status == "skipped":
        r["metrics"] = None
    return r


def synthetic() -> list[dict]:
    """One scenario, three seeds each: ``stable`` finishes every seed at 20–22 dB;
    ``unstable`` reaches 30 dB twice and diverges once (its own floor: 6 dB); ``flaky`` fails
    (error) on seed 0 and times out on seed 2 without floors of their own (a killed worker's
    record) and finishes seed 1: its failures take the floor of the same private batch from
    the other attacks' records (8 dB on seed 0, 6 dB on seed 2); ``never`` is skipped on
    every seed (a design skip: no seeds)."""
    t = _template()
    return [
        _record(t, 1, "stable", 0, "ok", 20.0, floor=8.0),
        _record(t, 2, "stable", 1, "ok", 21.0, floor=7.0),
        _record(t, 3, "stable", 2, "ok", 22.0),
        _record(t, 4, "unstable", 0, "ok", 30.0, floor=8.0),
        _record(t, 5, "unstable", 1, "ok", 30.0, floor=7.0),
        _record(t, 6, "unstable", 2, "diverged", floor=6.0),
        _record(t, 7, "flaky", 0, "error"),
        _record(t, 8, "flaky", 1, "ok", 25.0),
        _record(t, 9, "flaky", 2, "timeout"),
        _record(t, 10, "never", 0, "skipped"),
        _record(t, 11, "never", 1, "skipped"),
    ]


def test_floor_values_come_from_the_record_then_its_batch_then_the_scenario():
    df = records_frame(synthetic())
    flaky = df[df["attack"] == "flaky"]
    values = seed_values(flaky, "psnr", pool=df)
    assert list(values["source"]) == [BATCH_FLOOR, MEASURED, BATCH_FLOOR]
    # seed 0's batch has floors 8 (stable) and 8 (unstable); seed 2's only the diverged 6
    assert list(values["value"]) == [8.0, 25.0, 6.0]
    unstable = seed_values(df[df["attack"] == "unstable"], "psnr", pool=df)
    assert list(unstable["source"]) == [MEASURED, MEASURED, OWN_FLOOR]
    # no floor on the same batch: the scenario's lowest (least credit to the attack)
    lone = df[df["cell_id"] == f"{9:016x}"].assign(scenario_seed=-1)
    assert seed_values(lone, "psnr", pool=df)["source"].tolist() == [SCENARIO_FLOOR]
    assert seed_values(lone, "psnr", pool=df)["value"].tolist() == [6.0]
    # a lower-is-better metric's worst floor is its highest
    assert seed_values(lone, "mse", higher_is_better=False, pool=df)["value"].tolist() == [0.2]
    # skipped cells are no seeds
    assert seed_values(df[df["attack"] == "never"], "psnr", pool=df).empty
    # the pool's floors computed once (as the leaderboard does per scenario) give the same
    for cells in (flaky, df[df["attack"] == "unstable"], lone):
        for metric, higher in (("psnr", True), ("mse", False)):
            once = pool_floors(df, metric, higher)
            pd.testing.assert_frame_equal(
                seed_values(cells, metric, higher, floors=once),
                seed_values(cells, metric, higher, pool=df))
    with pytest.raises(ValueError, match="not both"):  # which pool would the floors be of?
        seed_values(lone, "psnr", pool=df, floors=pool_floors(df, "psnr", True))


def test_a_diverged_seed_pulls_the_mean_down_to_its_floor_and_is_counted():
    df = records_frame(synthetic())
    s = summarize_attacks(df).set_index("attack")
    assert "never" not in s.index  # only skipped: no row, no seeds
    u = s.loc["unstable"]
    assert u["psnr"] == pytest.approx((30 + 30 + 6) / 3)  # not 30: the floor counts
    assert u["psnr_converged"] == pytest.approx(30.0)
    assert (u["n"], u["n_ok"], u["psnr_n"], u["diverged"], u["failed"]) == (3, 2, 3, 1, 0)
    assert u["n_floor"] == 1 and u["n_success"] == 2
    expected = t_interval([30.0, 30.0, 6.0])
    assert (u["psnr_ci_low"], u["psnr_ci_high"]) == pytest.approx((expected.low, expected.high))
    f = s.loc["flaky"]
    assert f["psnr"] == pytest.approx((8 + 25 + 6) / 3) and f["failed"] == 2
    assert s.loc["stable", "psnr"] == pytest.approx(21.0) and s.loc["stable", "n_floor"] == 0
    # the unstable attack is no longer ranked above the stable one by its lucky seeds alone
    table = attack_tables(df)[0].frame.set_index("Attack")
    assert "never" not in table.index and table.loc["unstable", "n"] == 3
    assert table.loc["unstable", "PSNR (dB)"] == "22.00 ± " + f"{expected.half:.2f}"
    assert table.loc["unstable", "PSNR (dB) converged only"] == "30.00 (n=2)"
    assert table.loc["stable", "PSNR (dB) converged only"] == ""
    assert table.loc["unstable", "Diverged"] == 1 and table.loc["flaky", "Failed"] == 2
    assert set(table["Rank"]) == {"1–3"}  # 3 seeds: these intervals all overlap


def test_a_seed_with_no_floor_anywhere_is_left_out_and_said_so():
    t = _template()
    records = [_record(t, 1, "a", 0, "ok", 20.0), _record(t, 2, "a", 1, "ok", 24.0),
               _record(t, 3, "a", 2, "diverged")]  # committed-style: no floor_metrics at all
    s = summarize_attacks(records_frame(records)).iloc[0]
    assert s["psnr"] == pytest.approx(22.0) and s["psnr_n"] == 2 and s["n"] == 3
    assert s["n_missing"] == 1 and s["diverged"] == 1
    table = attack_tables(records_frame(records))[0]
    assert "had no floor" in table.note and table.frame.iloc[0]["n"] == 2


def test_a_failed_seed_without_an_lpips_floor_is_said_so_under_the_lpips_column():
    """LPIPS has no floor (the grey guess is not scored with it): an attack's crashed seeds
    leave its LPIPS mean over the lucky ones, under the table's n of every seed; the note
    says how many are left out, where the PSNR column counts them at their floor."""
    t = _template()
    records = [_record(t, 1, "a", 0, "ok", 40.0), _record(t, 2, "a", 1, "ok", 41.0),
               _record(t, 3, "a", 2, "error", floor=8.0), _record(t, 4, "a", 3, "error", floor=8.0)]
    for r, v in zip(records[:2], (0.05, 0.06)):
        r["metrics"].update(lpips=v, lpips_worst=v)
    df = records_frame(records)
    s = summarize_attacks(df).iloc[0]
    assert (s["psnr_n"], s["lpips_n"], s["lpips_n_missing"], s["n_missing"]) == (4, 2, 2, 0)
    table = attack_tables(df)[0]
    assert table.frame.iloc[0]["n"] == 4
    assert "LPIPS: 2 diverged or failed seed(s) have no floor for it" in table.note
    assert "had no floor" not in table.note  # PSNR's failed seeds counted at their floor
    lpips = pivot(records, value="lpips")  # leakbench table --value lpips: its caption too
    assert lpips.missing == (2, 0) and lpips.cells.iloc[0]["n"] == 2  # (no floor, never attacked)
    assert "2 diverged or failed seed(s) have no floor for lpips" in default_caption(lpips)
    for r in records[:2]:  # an attack that reports no labels: its column is n/a, and no
        r["metrics"]["label_acc"] = None  # note says a failed seed left its mean
    note = attack_tables(records_frame(records))[0].note
    assert "LPIPS: 2 diverged" in note and "Label acc:" not in note


def test_a_failed_seed_of_an_attack_that_infers_labels_recovered_none():
    """Label accuracy has no floor (no guess is scored for labels): a diverged seed of an
    attack that reports labels counts at 0 in the tables, the pivot and the claims, instead
    of dropping out; an attack that reports none (R-GAP) stays n/a."""
    t = _template()
    records = [_record(t, 1, "infers", 0, "ok", 25.0, floor=5.0),
               _record(t, 2, "infers", 1, "ok", 26.0, floor=5.0),
               _record(t, 3, "infers", 2, "diverged", floor=5.0),
               _record(t, 4, "given", 0, "ok", 24.0, floor=5.0),
               _record(t, 5, "given", 1, "diverged", floor=5.0)]
    records[3]["metrics"]["label_acc"] = None  # the attack infers no labels
    df = records_frame(records)
    values = seed_values(df, "label_acc", no_floor_value=0.0)
    assert list(values["source"]) == [MEASURED, MEASURED, NO_FLOOR_VALUE, MEASURED, MISSING]
    assert values["value"].iloc[:3].tolist() == [1.0, 1.0, 0.0]
    s = summarize_attacks(df).set_index("attack")
    assert s.loc["infers", "label_acc"] == pytest.approx(2 / 3)
    assert s.loc["infers", "label_acc_n"] == 3 and s.loc["given", "label_acc_n"] == 0
    table = attack_tables(df)[0].frame.set_index("Attack")
    assert table.loc["infers", "Label acc"].startswith("0.67 [")  # a share: Wilson's
    assert table.loc["given", "Label acc"] == "n/a"
    p = pivot(records, value="label_acc")
    assert p.cell("none", "infers")["mean"] == pytest.approx(2 / 3)
    assert p.cell("none", "infers")["n"] == 3
    claims = claims_frame(records, {"label_acc"})
    infers = claims[claims["attack"] == "infers"].sort_values("cell_id")
    assert infers["value:label_acc"].tolist() == [1.0, 1.0, 0.0]
    # a row whose every seed failed: the attack reports labels elsewhere in the scenario, so
    # the tables count 0 as the pivot and the claims do (the tables said n/a, n = 0)
    failed = [_record(t, 10 + s, "infers", s, "error", floor=5.0, defense="noise")
              for s in range(2)]
    df = records_frame(records + failed)
    row = summarize_attacks(df).set_index(["defense", "attack"]).loc[("noise", "infers")]
    assert row["label_acc"] == 0.0 and row["label_acc_n"] == 2
    assert pivot(records + failed, value="label_acc").cell("noise", "infers")["n"] == 2


def test_every_table_shows_n_and_intervals_in_markdown_and_latex():
    df = records_frame(synthetic())
    for t in attack_tables(df) + defense_tables(df):
        assert "n" in t.frame.columns and "Rank" in t.frame.columns
    md = render(df)
    assert "| n " in md and "±" in md and "95% Student-t" in md
    tex = render(df, "latex")
    assert "$\\pm$" in tex and "95\\% Student-t" in tex and " & n " in tex


def test_defense_ranks_are_shared_where_the_strongest_attacks_overlap():
    t = _template()
    records = []
    for i, (defense, values) in enumerate((("none", [40, 41, 42]), ("a", [10, 12, 14]),
                                           ("b", [11, 12, 13]))):
        records += [_record(t, 10 * i + s, "dlg", s, "ok", v, defense=defense)
                    for s, v in enumerate(values)]
    frame = defense_tables(records_frame(records))[0].frame
    assert list(frame["Defense"]) == ["a", "b", "none"]
    assert list(frame["Rank"]) == ["1–2", "1–2", "3"]


def test_utility_failures_count_at_chance_with_intervals():
    rows = [("none", "ok", 0.9, 1), ("none", "ok", 0.8, 2), ("p", "ok", 0.7, 1),
            ("p", "error", None, 2)]
    util = pd.DataFrame([{"dataset": "d", "arch": "a", "defense": d, "seed": sc,
                          "status": st, "accuracy": acc, "update_cosine": 0.5 if acc else None,
                          "chance": 0.1 if acc else None, "scenario": sc}
                         for d, st, acc, sc in rows])
    s = utility_summary(util, "d", "a").set_index("defense")
    assert s.loc["p", "accuracy"] == pytest.approx(0.4) and s.loc["p", "accuracy_n"] == 2
    assert s.loc["p", "drop"] == pytest.approx(((0.9 - 0.7) + (0.8 - 0.1)) / 2)
    assert s.loc["p", "update_cosine_n"] == 1  # the failed run has no cosine


def test_records_without_floor_metrics_render(tmp_path):
    """Records written before floors existed still render (the fallbacks apply)."""
    records = [{k: v for k, v in r.items() if k != "floor_metrics"}
               for r in load_records(RESULTS / "quick")]
    df = records_frame(records)
    assert df["floor_psnr"].isna().all()
    md = render(df)
    assert "| n " in md and "± " in md


def test_aggregated_csv_has_mean_interval_and_n_per_row(tmp_path):
    (tmp_path / "records").mkdir()
    for r in synthetic():
        (tmp_path / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r))
    path = export(tmp_path, aggregate=True)
    assert path.name == "aggregate.csv"
    rows = list(csv.DictReader(path.open()))
    assert list(rows[0]) == aggregate_columns()
    by = {r["attack"]: r for r in rows}
    assert set(by) == {"stable", "unstable", "flaky"}
    u = by["unstable"]
    assert float(u["psnr"]) == pytest.approx(22.0, abs=1e-4) and u["n"] == "3"
    assert float(u["psnr_ci_low"]) < 22 < float(u["psnr_ci_high"])
    assert u["diverged"] == "1" and u["n_floor"] == "1"
    assert sum(r["strongest"] == "True" for r in rows) == 1
    assert export(tmp_path, aggregate=True).read_bytes() == path.read_bytes()


def test_the_aggregated_export_ranks_text_scenarios_by_rouge1():
    """As the text tables do: each text row's rank and each defense's strongest attack come
    from ROUGE-1 (text rows have no PSNR: every rank was shared and the strongest attack was
    the first by name)."""
    from bench.leaderboard.export import aggregate_frame
    from bench.leaderboard.frames import SCENARIO

    agg = aggregate_frame(records_frame(load_records(RESULTS / "text")))
    assert len(agg) and agg["psnr"].isna().all() and agg["rouge1"].notna().all()
    keys = agg[[*SCENARIO, "defense"]].astype(str).apply(tuple, axis=1)
    assert agg["reference"].any() and not agg["reference"].all()  # frequent_words' rows
    for _, g in agg.groupby(keys, sort=False):
        real = g[~g["reference"].astype(bool)]  # a reference row reads no update
        best = real.loc[real["rouge1"].notna(), "rouge1"].max()
        strongest = g[g["strongest"]]
        assert len(strongest) == 1 and strongest["rouge1"].iloc[0] == best
        assert not strongest["reference"].iloc[0]
        assert list(g["rouge1"]) == sorted(g["rouge1"], reverse=True)  # in rank order
        # each rank from ROUGE-1's intervals (a wide one can hold a better best rank than a
        # narrow one above it: rank_best need not rise down the table)
        low, high = g["rouge1_ci_low"].tolist(), g["rouge1_ci_high"].tolist()
        for i, (best_rank, worst_rank) in enumerate(zip(g["rank_best"], g["rank_worst"])):
            above = sum(low[j] > high[i] for j in range(len(g)))
            below = sum(high[j] < low[i] for j in range(len(g)))
            assert (best_rank, worst_rank) == (1 + above, len(g) - below)
    assert (agg["rank_best"] > 1).any()  # separated intervals: not every rank shared
    assert (agg["defense_rank_best"] > 1).any()



def test_a_diverged_text_seed_counts_at_its_rouge1_floor_not_as_missing():
    """n_floor and n_missing count the scenario's ranking metric: a text seed has no PSNR
    floor, but enters ROUGE-1 at one (it was counted missing while in the mean)."""
    from bench.leaderboard.frames import SCENARIO

    df = records_frame(load_records(RESULTS / "text"))
    key = df[SCENARIO].astype(str).apply(tuple, axis=1)
    first = df[key == key.iloc[0]]
    dager = first[(first["attack"] == "dager") & (first["defense"] == "none")]
    ids = set(dager["cell_id"])
    records = [r for r in load_records(RESULTS / "text") if r["cell_id"] in ids]
    records[0] = {**records[0], "status": "diverged", "metrics": None}
    row = summarize_attacks(records_frame(records)).iloc[0]
    assert row["diverged"] == 1 and row["rouge1_n"] == len(records)
    assert row["n_floor"] == 1 and row["n_missing"] == 0


def test_leaderboard_latex_with_free_text_labels_compiles(tmp_path):
    """Labels are free text (an imagefolder's folder): a brace, dollar, caret or < in them
    stopped pdflatex ("Missing $ inserted"); every special character is escaped."""
    from helpers import pdflatex, require_pdflatex

    require_pdflatex()
    records = synthetic()
    for r in records:
        r["attack_label"] = r["attack_label"] + " we_ird&50%#$x~^{y}<b>\\"
        r["dataset_label"] = "folder(p$x^{$q)"
    tex = render(records_frame(records), "latex")
    assert "\\$x\\textasciitilde{}\\textasciicircum{}\\{y\\}$<$b$>$" in tex
    (tmp_path / "board.tex").write_text(tex)
    pdflatex(tmp_path, "\\input{board}", "\\usepackage{booktabs}\n\\usepackage{graphicx}")


def test_clients_that_differ_beyond_their_mode_are_separate_scenarios():
    """Two FedAvg clients with different local epochs were pooled into one row (n doubled);
    the mode label now carries the non-default parameters, and --where mode=fedavg still
    selects both."""
    t = _template()
    records = []
    for n, (epochs, seed) in enumerate([(1, 0), (1, 1), (3, 0), (3, 1)], start=1):
        r = _record(t, n, "a", seed, "ok", 20.0 + n, floor=5.0)
        r["client"] = {"mode": "fedavg", "bn_mode": "train", "local_epochs": epochs,
                       "local_batch_size": 0, "lr": 0.1}
        records.append(r)
    df = records_frame(records)
    assert sorted(set(df["mode"])) == ["fedavg", "fedavg(local_epochs=3)"]
    tables = attack_tables(df)
    assert len(tables) == 2 and all(t.frame.iloc[0]["n"] == 2 for t in tables)
    assert any("fedavg(local_epochs=3)" in t.title for t in tables)
    p = pivot(records, rows="mode", cols="attack", where={"mode": ["fedavg"]})
    assert p.row_values == ["fedavg", "fedavg(local_epochs=3)"]


def test_quality_curves_tell_clients_apart_too():
    """The curves' scenarios use the same client label as the tables (they merged two FedAvg
    settings into one curve, n doubled)."""
    import glob

    from bench.leaderboard.curves import curve_frame

    curved = [json.loads(Path(f).read_text())
              for f in sorted(glob.glob(str(RESULTS / "attacks" / "records" / "*.json")))]
    one = next(r for r in curved if r.get("curve") and r["status"] == "ok"
               and r["defense_label"] == "none")
    records = []
    for epochs in (1, 3):
        r = copy.deepcopy(one)
        r["client"] = {**r["client"], "mode": "fedavg", "local_epochs": epochs}
        r["cell_id"] = f"{r['cell_id']}{epochs}"
        records.append(r)
    frame = curve_frame(records)
    assert sorted(set(frame["mode"])) == ["fedavg", "fedavg(local_epochs=3)"]
    assert set(frame["n"]) == {1}


def test_a_mean_that_rounds_to_zero_is_never_shown_as_minus_zero():
    """paper-rgap's CNN6 DLG row showed SSIM "-0.000 ± 0.004" (a mean of −5e-6)."""
    from bench.leaderboard.uncertainty import Interval
    from bench.metrics.base import fixed

    assert Interval(-5.05e-6, -0.004, 0.004, 5).format(3) == "0.000 ± 0.004"
    assert [fixed(v, 3) for v in (-5e-6, -0.0004, -0.0006, -0.0, 0.0, -2.5)] == [
        "0.000", "0.000", "-0.001", "0.000", "0.000", "-2.500"]
    assert fixed(-0.4, 0) == "0" and fixed(-12.345, 2) == "-12.35"


def test_a_share_metric_takes_wilsons_interval_so_all_0_or_all_1_seeds_are_no_point():
    """Label accuracy at batch 1 is 0 or 1 per seed: two seeds of 1 against two of 0 were
    "1.00 ± 0.00" and "0.00 ± 0.00", clearly separated in ranks, daggers and diff."""
    from bench.leaderboard.uncertainty import clearly_better, metric_interval
    from bench.metrics import get_metric

    assert [get_metric(m).share for m in ("label_acc", "exact", "token_acc")] == [True] * 3
    assert not any(get_metric(m).share for m in ("psnr", "ssim", "rouge1"))
    ones, zeros = metric_interval([1.0, 1.0], share=True), metric_interval([0.0, 0.0], True)
    assert ones.low < zeros.high and not clearly_better(ones, zeros, True)
    assert clearly_better(metric_interval([1.0, 1.0]), metric_interval([0.0, 0.0]), True)
    assert ones.format(2) == "1.00 [0.34, 1.00]" and zeros.format(2) == "0.00 [0.00, 0.66]"
    assert metric_interval([1.0], share=True).format(2) == "1.00 ± n/a"
    assert metric_interval([1.0, 3.0]).format(2) == "2.00 ± 12.71"  # t: centred, as before


def test_a_share_metric_must_run_from_0_to_1():
    from bench.metrics import Metric, register_metric

    class Odd(Metric):
        """A share whose best is 100: not a share of trials."""

        name, label, modality, higher_is_better, kind = "odd_share", "Odd", "image", True, \
            "per_item"
        digits, order, best, worst, share = 2, 99, 100.0, 0.0, True
        compute = staticmethod(lambda o, r: 0.0)

    with pytest.raises(TypeError, match="share must be a bool, and a share's best 1"):
        register_metric(Odd)


def test_the_converged_mean_is_the_headline_mean_when_every_seed_finished_in_any_order():
    """``<m>_converged`` is summed as the headline is (``math.fsum``): equal to it where every
    seed finished, and unchanged by the order of the cells (pandas' ``mean`` added them in
    frame order: the last digit moved with the cell ids)."""
    values = [69.583, 72.15, 59.1, 90.1, 2.232211, 54.1412, 68.6484]
    orders = (list(range(7)), list(range(6, -1, -1)), [3, 0, 6, 1, 5, 2, 4])
    assert len({sum(values[i] for i in order) for order in orders}) == 3  # order matters here
    t = _template()
    records = [_record(t, i + 1, "a", i, "ok", v) for i, v in enumerate(values)]
    frame = records_frame(records)
    firsts = {summarize_attacks(frame.iloc[order]).iloc[0]["psnr_converged"] for order in orders}
    row = summarize_attacks(frame).iloc[0]
    assert firsts == {row["psnr"]} == {math.fsum(values) / len(values)}


def test_a_share_within_the_schemas_rounding_slack_stays_inside_its_own_interval():
    """A share a hair above 1 (the record check allows 1e-6 of rounding) is read as 1: its
    Wilson interval contains the mean it reports."""
    for shares, mean in (([1.0000005] * 5, 1.0), ([-4e-7, 0.0, -1e-7], 0.0),
                         ([1.0000005, 0.0, 1.0, 1.0], 0.75)):
        iv = wilson_interval(shares)
        assert iv.mean == mean and iv.low <= iv.mean <= iv.high, (shares, iv)
