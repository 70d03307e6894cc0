"""``leakbench check``: claims files validated like suites, verdicts on synthetic and doctored
records, byte-stable tables (pdflatex compiles the LaTeX), exit 1 when a held claim fails."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from bench.claims.evaluate import FAILS, HOLDS, NOT_JUDGED, NOT_RUN, check_claims
from bench.claims.schema import ClaimsError, load_claims
from bench.cli import main
from bench.store import load_records
from helpers import pdflatex, require_pdflatex

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]

CLAIMS = """\
suite: synthetic
claims:
  - id: a-leaks
    paper: "Someone 2020, Table 1"
    sentence: "Attack A recovers the image undefended."
    where: {attack: A, defense: none}
    metric: success
    expect: {at_least: 0.5}
    reported: "always"
  - id: a-psnr
    paper: "Someone 2020, Fig. 2"
    sentence: "A reaches 30 dB or more."
    where: {attack: A, defense: none}
    metric: psnr
    expect: {at_least: 30}
  - id: noise-helps
    paper: "Someone 2020, Sec. 5"
    sentence: "Noise lowers A's PSNR."
    where: {attack: A, defense: none}
    metric: psnr
    expect:
      better_than: {defense: noise}
      separated: true
  - id: b-labels
    paper: "Someone 2020, Table 3"
    sentence: "B gets every label."
    where: {attack: B}
    metric: label_acc
    expect: {at_least: 0.99}
"""


def record(t: dict, n: int, attack: str, defense: str, seed: int, psnr: float | None,
           status: str = "ok") -> dict:
    r = copy.deepcopy(t)
    r.update(cell_id=f"{n:016x}", seed=seed, status=status, attack_label=attack,
             defense_label=defense, arch_label="mlp", dataset_label="digits", batch_size=1,
             error=None, picture=None, suite="synthetic",
             derived_seeds={"scenario": 1000 + seed, "attack": n, "defense": n})
    r["attack"] = {"name": attack, "params": {}, "shown": []}
    r["defense"] = [{"name": defense.split("(")[0], "params": {}, "shown": []}]
    r["arch"] = {"name": "mlp", "params": {}, "shown": []}
    r["client"], r["victim"] = {"mode": "fedsgd", "bn_mode": "train"}, "init"
    r["metrics"] = None if psnr is None else {
        "psnr": psnr, "mse": 10 ** (-psnr / 10), "ssim": 0.5, "label_acc": 1.0,
        "success": psnr >= 20}
    r["floor_metrics"] = {"psnr": 5.0, "mse": 10 ** -0.5, "ssim": 0.0}
    return r


PSNR = {("A", "none"): [40.0, 42.0, 44.0], ("A", "noise(scale=0.1)"): [10.0, 11.0, 12.0]}


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """A results folder of synthetic records and the claims file about them."""
    t = json.loads(TEMPLATE.read_text())
    folder = tmp_path / "res"
    (folder / "records").mkdir(parents=True)
    n = 0
    for (attack, defense), values in PSNR.items():
        for seed, v in enumerate(values):
            n += 1
            write(folder, record(t, n, attack, defense, seed, v))
    (tmp_path / "synthetic.claims.yaml").write_text(CLAIMS)
    return folder


def write(folder: Path, r: dict) -> None:
    (folder / "records" / f"{r['cell_id']}.json").write_text(json.dumps(r, indent=1,
                                                                        sort_keys=True))


def check(folder: Path, *extra: str) -> int:
    return main(["check", str(folder), "--claims", str(folder.parent / "synthetic.claims.yaml"),
                 *extra])


def verdicts(folder: Path) -> dict[str, str]:
    rows = json.loads((folder / "check.json").read_text())["rows"]
    return {r["claim"]: r["verdict"] for r in rows}


def test_verdicts_tables_and_byte_stability(store, capsys):
    assert check(store) == 0
    out = capsys.readouterr().out
    assert verdicts(store) == {"a-leaks": HOLDS, "a-psnr": HOLDS, "noise-helps": HOLDS,
                               "b-labels": NOT_RUN}
    doc = json.loads((store / "check.json").read_text())
    assert doc["suite"] == "synthetic"
    for row in doc["rows"]:
        assert set(row) >= {"claim", "paper", "sentence", "reported", "measured", "verdict"}
        assert all(isinstance(row[k], str) for k in ("claim", "paper", "sentence", "reported",
                                                      "measured", "verdict"))
    b = next(r for r in doc["rows"] if r["claim"] == "b-labels")
    assert b["measured"] == "no cell ran (none with attack=B)"  # the filter named
    a = next(r for r in doc["rows"] if r["claim"] == "a-psnr")
    assert a["measured"].startswith("42.00 ± 4.97 (n=3)")  # t(0.975, 2)·2/√3 = 4.97
    assert a["reported"] == "n/a"
    assert "| a-leaks" in out and "3/3 = 1.00" in out
    tex = (store / "check.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex and "$\\geq$" in tex
    first = {n: (store / n).read_bytes() for n in ("check.md", "check.tex", "check.json")}
    assert check(store, "--format", "both") == 0
    assert {n: (store / n).read_bytes() for n in first} == first


def test_a_held_claim_made_to_fail_exits_1(store, capsys):
    assert check(store) == 0  # the committed state: every run claim holds
    t = json.loads(TEMPLATE.read_text())
    for seed in range(3):  # doctored: A's undefended seeds collapse (one diverges)
        r = record(t, 1 + seed, "A", "none", seed, 8.0 if seed else None,
                   "ok" if seed else "diverged")
        write(store, r)
    capsys.readouterr()
    committed = {n: (store / n).read_bytes() for n in ("check.md", "check.tex", "check.json")}
    assert check(store) == 1
    captured = capsys.readouterr()
    assert "claim a-leaks held in the reference and does not hold now" in captured.err
    assert "check files are left as they were" in captured.err
    assert "| a-leaks" in captured.out and "does not hold" in captured.out  # printed
    # the reference is left as it was, so a second run (a CI retry) fails again
    assert {n: (store / n).read_bytes() for n in committed} == committed
    assert check(store) == 1
    assert verdicts(store)["a-leaks"] == HOLDS
    # --accept records the new verdicts (still exit 1: a held claim broke); they are the
    # reference after it
    assert check(store, "--accept") == 1
    assert verdicts(store)["a-leaks"] == FAILS and verdicts(store)["noise-helps"] == FAILS
    assert "does not hold" in (store / "check.md").read_text()
    assert check(store) == 0


def test_a_break_against_another_reference_still_writes_dirs_files(store, tmp_path, capsys):
    """Only DIR's own check.json is kept on a break: against another file (or the nightly's
    --against-records) DIR's files are this check's report, and the reference is elsewhere."""
    assert check(store) == 0
    reference = tmp_path / "committed.json"
    shutil.copy(store / "check.json", reference)
    t = json.loads(TEMPLATE.read_text())
    for seed in range(3):
        write(store, record(t, 1 + seed, "A", "none", seed, 8.0))
    assert check(store, "--against", str(reference)) == 1
    assert verdicts(store)["a-leaks"] == FAILS
    assert "left as they were" not in capsys.readouterr().err
    shutil.copy(reference, store / "check.json")  # --against naming DIR itself is its own
    assert check(store, "--against", str(store)) == 1
    assert verdicts(store)["a-leaks"] == HOLDS


def test_against_an_explicit_reference_and_a_claim_that_never_held(store, tmp_path, capsys):
    assert check(store) == 0
    reference = tmp_path / "committed"
    reference.mkdir()
    shutil.copy(store / "check.json", reference / "check.json")
    t = json.loads(TEMPLATE.read_text())
    write(store, record(t, 1, "A", "none", 0, 31.0))  # a-psnr: mean 39, still ≥ 30
    assert check(store, "--against", str(reference)) == 0
    for seed in range(3):
        write(store, record(t, 1 + seed, "A", "none", seed, 25.0))  # a-psnr fails, a-leaks holds
    assert check(store, "--against", str(reference / "check.json")) == 1
    assert "a-psnr" in capsys.readouterr().err
    assert main(["check", str(store), "--claims", str(tmp_path / "synthetic.claims.yaml"),
                 "--against", str(tmp_path / "nowhere")]) == 2
    deep = tmp_path / "deep.json"  # nested past the parser's recursion limit: a traceback
    deep.write_text("[" * 100_000 + "]" * 100_000)
    capsys.readouterr()
    assert main(["check", str(store), "--claims", str(tmp_path / "synthetic.claims.yaml"),
                 "--against", str(deep)]) == 2
    assert "deep.json: not a check.json (RecursionError" in capsys.readouterr().err


def test_against_a_reference_holding_none_of_the_claims_is_refused(store, tmp_path, capsys):
    """Another suite's check.json, or one with no rows, had passed a CI gate: no claim of the
    reference was checked here, so none could break (a bad-input hunt)."""
    assert check(store) == 0
    for name, rows in (("empty.json", []), ("other.json", [
            {"claim": "zzz", "paper": "p", "sentence": "s", "verdict": HOLDS}])):
        reference = tmp_path / name
        reference.write_text(json.dumps({"suite": "zzz", "rows": rows}))
        capsys.readouterr()
        assert check(store, "--against", str(reference)) == 2
        err = capsys.readouterr().err
        assert err == (f"leakbench: error: --against {reference}: gives a verdict for none of "
                       "the 4 claim(s) checked here, so none could break: give this suite's "
                       "check.json\n"), err


def test_failed_seeds_count_as_floors_and_no_success(store):
    t = json.loads(TEMPLATE.read_text())
    write(store, record(t, 3, "A", "none", 2, None, "diverged"))  # floor 5 dB
    claims = load_claims(str(store.parent / "synthetic.claims.yaml")).claims
    out = {o.claim.id: o for o in check_claims(claims, load_records(store))}
    assert out["a-leaks"].value.mean == pytest.approx(2 / 3)
    assert out["a-psnr"].value.mean == pytest.approx((40 + 42 + 5) / 3)
    assert out["a-psnr"].verdict == FAILS


def test_risk_index_claims_on_the_committed_rgap_records():
    claims = load_claims("paper-rgap").claims
    rank = [c for c in claims if c.metric == "risk_index"]
    records = [r for r in load_records(ROOT / "results" / "rgap")
               if r["arch"]["name"] in ("cnn6", "cnn6d") and r["defense_label"] == "none"]
    out = check_claims(rank, records)
    assert [o.verdict for o in out] == [HOLDS, HOLDS]
    assert out[0].value.mean == 1.0 and 0.9 < out[1].value.mean < 0.95


@pytest.mark.parametrize("name", ["paper-dlg", "paper-idlg", "paper-rgap"])
def test_builtin_claims_load_and_every_filter_matches_cells_of_their_suite(name):
    from bench.suite import load_suite
    from bench.suite.expand import attack_cells

    claims = load_claims(name)
    assert claims.suite == name
    labels: dict[str, set[str]] = {"attack": set(), "defense": set(), "arch": set(),
                                   "dataset": set(), "batch_size": set()}
    for cell in attack_cells(load_suite(name)):
        for axis, spec in (("attack", cell.attack), ("arch", cell.arch),
                           ("dataset", cell.dataset)):
            labels[axis] |= {spec.label, spec.name}
        labels["defense"] |= {cell.defense_label, "+".join(d.name for d in cell.defense)}
        labels["batch_size"].add(str(cell.batch_size))
    for c in claims.claims:
        for where in (c.where, {**c.where, **(c.better_than or {})}):
            for axis, values in where.items():
                assert set(values) <= labels[axis], (c.id, axis, values)


BAD = {
    "not_a_mapping": ("- a\n- b\n", "expected a mapping"),
    "unknown_key": ("claimz: []\n", "unknown key 'claimz' (did you mean 'claims'?)"),
    "no_claims": ("suite: x\nclaims: []\n", "no claims"),
    "missing_metric": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                       "expect: {at_least: 1}}\n", "missing 'metric'"),
    "bad_id": ("claims:\n- {id: A B, paper: p, sentence: s, where: {attack: dlg}, metric: psnr, "
               "expect: {at_least: 1}}\n", ".id: expected lower-case"),
    "unknown_metric": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                       "metric: pnsr, expect: {at_least: 1}}\n", "did you mean 'psnr'"),
    "two_expectations": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                         "metric: psnr, expect: {at_least: 1, at_most: 2}}\n", "exactly one"),
    "nan_bound": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                  "metric: psnr, expect: {at_least: .nan}}\n", "finite number"),
    "unknown_column": ("claims:\n- {id: a, paper: p, sentence: s, where: {atack: dlg}, "
                       "metric: psnr, expect: {at_least: 1}}\n", "unknown column 'atack'"),
    "separated_bound": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                        "metric: psnr, expect: {at_least: 1, separated: true}}\n",
                        "only an ordering"),
    "twice": ("claims:\n" + "- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
              "metric: psnr, expect: {at_least: 1}}\n" * 2, "given twice"),
    "huge_bound": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                   "metric: psnr, expect: {at_least: " + "9" * 400 + "}}\n", "beyond a float"),
    "huge_reported": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: dlg}, "
                      "metric: psnr, reported: " + "9" * 400 + ", expect: {at_least: 1}}\n",
                      "beyond a float"),
    "odd_suite": ("suite: 'odd_%&#$^~{}'\nclaims:\n- {id: a, paper: p, sentence: s, "
                  "where: {attack: dlg}, metric: psnr, expect: {at_least: 1}}\n",
                  "suite: expected a suite name"),  # it went raw into check.tex's label
    # 1.0 is not the label 1: the claim matched no cell and read "not run" (a bad-input hunt)
    "float_batch": ("claims:\n- {id: a, paper: p, sentence: s, where: {batch_size: 1.0}, "
                    "metric: psnr, expect: {at_least: 1}}\n",
                    "where.batch_size: expected a non-negative integer as cells have it, "
                    "got 1.0"),
    "padded_seed": ("claims:\n- {id: a, paper: p, sentence: s, where: {seed: '01'}, "
                    "metric: psnr, expect: {at_least: 1}}\n", "where.seed: expected a non-"),
    "text_seed": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: A, seed: x}, "
                  "metric: psnr, expect: {at_least: 1}}\n", "where.seed: expected a non-negative"),
    "better_than_itself": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: A}, "
                           "metric: psnr, expect: {better_than: {attack: A}}}\n",
                           "compares the cells with themselves"),
    # sides that share cells (a fifth bad-input hunt: batch 1 "held" against batch 1 and 2)
    "sides_share_a_value": ("claims:\n- {id: a, paper: p, sentence: s, where: {batch_size: 1}, "
                            "metric: psnr, expect: {better_than: {batch_size: [1, 2]}}}\n",
                            "batch_size=1 is on both sides"),
    "where_leaves_the_key_open": ("claims:\n- {id: a, paper: p, sentence: s, where: "
                                  "{attack: A}, metric: psnr, expect: {better_than: "
                                  "{defense: noise}}}\n", "where does not fix defense"),
    "name_and_label": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: A, defense: "
                       "noise}, metric: psnr, expect: {better_than: {defense: "
                       "'noise(scale=0.1)'}}}\n", "defense=noise(scale=0.1) is on both sides"),
    "empty": ("", "the file is empty"),
    "yaml": ("claims: [\n", "invalid YAML"),
    # table --where's "either" matched no label here: "not run", exit 0 (a CLI fuzz)
    "pipe_either": ("claims:\n- {id: a, paper: p, sentence: s, where: {attack: 'dlg|idlg'}, "
                    "metric: psnr, expect: {at_least: 1}}\n",
                    "where.attack: 'dlg|idlg': a claim gives either as a list, [dlg, idlg]"),
    "pipe_either_other_side": ("claims:\n- {id: a, paper: p, sentence: s, where: {defense: "
                               "none}, metric: psnr, expect: {better_than: {defense: "
                               "'prune|noise'}}}\n", "a claim gives either as a list"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_claims_files_are_one_line_and_exit_2(case, store, tmp_path, capsys):
    text, message = BAD[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ClaimsError, match=re.escape(message)):
        load_claims(str(path))
    capsys.readouterr()
    assert main(["check", str(store), "--claims", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leakbench: error: ") and err.count("\n") == 1 and message in err


def test_an_include_cycle_and_an_unknown_name_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text(f"include: [{tmp_path / 'a.yaml'}]\n")
    with pytest.raises(ClaimsError, match="includes itself"):
        load_claims(str(tmp_path / "a.yaml"))
    with pytest.raises(ClaimsError, match="did you mean 'paper-dlg'"):
        load_claims("paper-dgl")


def test_a_relative_include_is_read_from_the_including_files_folder(tmp_path, monkeypatch):
    folder = tmp_path / "claims"
    folder.mkdir()
    claim = ("claims:\n  - {id: x-succeeds, paper: P, sentence: S, where: {attack: dlg},\n"
             "     metric: psnr, expect: {at_least: 20}}\n")
    (folder / "base.yaml").write_text(claim)
    (folder / "top.yaml").write_text("include: [base.yaml]\n")
    monkeypatch.chdir(tmp_path)  # base.yaml is not in the working directory
    assert [c.id for c in load_claims(str(folder / "top.yaml")).claims] == ["x-succeeds"]
    (tmp_path / "base.yaml").write_text(claim.replace("x-succeeds", "cwd-copy"))
    assert [c.id for c in load_claims("claims/top.yaml").claims] == ["x-succeeds"]
    (folder / "base.yaml").unlink()  # only the working directory's copy is left: not read
    with pytest.raises(ClaimsError, match=r"include\[0\]: no built-in claims file named "
                                          r"'base.yaml', and no file .*claims/base.yaml"):
        load_claims(str(folder / "top.yaml"))


def test_a_misspelt_filter_is_named_and_a_cell_with_a_bar_stays_one_cell(store, tmp_path):
    text = CLAIMS.replace("better_than: {defense: noise}", "better_than: {defense: nosie}")
    (tmp_path / "synthetic.claims.yaml").write_text(text)
    assert check(store) == 0
    rows = {r["claim"]: r for r in json.loads((store / "check.json").read_text())["rows"]}
    assert rows["noise-helps"]["verdict"] == NOT_RUN
    assert rows["noise-helps"]["measured"].endswith("vs n/a (n=0) (none with defense=nosie)")
    text = CLAIMS.replace("better_than: {defense: noise}", "better_than: {defense: [noise, x]}")
    (tmp_path / "synthetic.claims.yaml").write_text(text)
    assert check(store) == 0
    table = [line for line in (store / "check.md").read_text().splitlines()
             if line.startswith("| noise-helps")]
    assert len(table) == 1 and "defense=noise\\|x" in table[0]
    assert table[0].replace("\\|", "").count("|") == 7  # six cells: seven bars
    outcomes = check_claims(load_claims(str(tmp_path / "synthetic.claims.yaml")).claims, [])
    assert {o.measured() for o in outcomes} == {"no cell ran"}


def test_a_long_check_table_goes_on_in_continued_floats():
    """Eleven claims in one float ran 354 pt past an article page: at most ROWS_PER_FLOAT
    claims per float, the caption and label on the first, the rest "(continued, n/N)"."""
    from bench.claims.evaluate import check_claims
    from bench.claims.render import ROWS_PER_FLOAT, render_latex
    from bench.claims.schema import load_claims

    outcomes = check_claims(load_claims("paper-dlg").claims, [])
    assert len(outcomes) > 2 * ROWS_PER_FLOAT
    tex = render_latex("paper-dlg", outcomes)
    floats = tex.split("\\begin{table}")[1:]
    assert len(floats) == -(-len(outcomes) // ROWS_PER_FLOAT)
    assert [f.count("\\\\\n") - 1 for f in floats] == [
        min(ROWS_PER_FLOAT, len(outcomes) - i) for i in range(0, len(outcomes), ROWS_PER_FLOAT)]
    assert "\\label{tab:check-paper-dlg}" in floats[0] and "Measured:" in floats[0]
    assert "(continued, 2/3)" in floats[1] and "\\label{tab:check-paper-dlg:2}" in floats[1]
    assert render_latex("x", outcomes[:1]).count("\\begin{table}") == 1


def test_a_break_against_a_mixed_reference_keeps_dirs_files_only_for_its_own_verdicts(
        store, tmp_path, capsys):
    """``--against DIR --against held.json``: a claim broken against held.json's verdict
    (DIR's own said otherwise) had kept DIR's files and blamed DIR's check.json."""
    assert check(store) == 0
    t = json.loads(TEMPLATE.read_text())
    for seed in range(3):
        write(store, record(t, 1 + seed, "A", "none", seed, 25.0))  # a-psnr fails now
    assert check(store, "--accept") == 1  # DIR's own: a-psnr does not hold
    held = json.loads((store / "check.json").read_text())
    for row in held["rows"]:
        row["verdict"] = HOLDS if row["claim"] == "a-psnr" else row["verdict"]
    (tmp_path / "held.json").write_text(json.dumps(held))
    capsys.readouterr()
    assert check(store, "--against", str(store), "--against", str(tmp_path / "held.json")) == 1
    assert "left as they were" not in capsys.readouterr().err  # held.json's verdict broke
    assert check(store, "--against", str(tmp_path / "held.json"), "--against", str(store)) == 0


def test_against_records_writes_dirs_files_on_a_break(store, tmp_path, capsys):
    """The nightly's reference is the committed records: its folder's check files are the
    report it uploads, written on a break too."""
    subset = tmp_path / "subset"
    shutil.copytree(store, subset)
    t = json.loads(TEMPLATE.read_text())
    for seed in range(3):
        write(subset, record(t, 1 + seed, "A", "none", seed, 8.0))
    claims = str(tmp_path / "synthetic.claims.yaml")
    assert main(["check", str(subset), "--claims", claims, "--against-records", str(store)]) == 1
    assert verdicts(subset)["a-leaks"] == FAILS
    assert "left as they were" not in capsys.readouterr().err


def test_check_latex_compiles_with_pdflatex(store, tmp_path):
    require_pdflatex()
    assert check(store) == 0
    committed = sorted(ROOT.glob("results/*/check.tex"))  # paper-dlg: the longest filters
    assert len(committed) >= 4
    inputs = "".join(f"\\input{{{p.with_suffix('')}}}\n" for p in [store / "check.tex",
                                                                  *committed])
    log = pdflatex(tmp_path, inputs)  # compiles, no missing character
    overfull = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert max(overfull, default=0.0) < 5, overfull  # the table fits the text width


def test_the_readme_claim_example_is_a_claim_of_paper_dlg():
    import yaml

    section = (ROOT / "README.md").read_text().split("## Paper claims", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    (example,) = yaml.safe_load(block)
    shipped = yaml.safe_load((ROOT / "bench" / "suites" / "paper-dlg.claims.yaml").read_text())
    assert example in shipped["claims"]


def test_against_records_judges_the_reference_on_the_same_cells(store, tmp_path, capsys):
    """A run of a subset of the committed cells (the nightly suite's) is compared with the
    committed records of those cells, not with the committed table over all of them."""
    assert check(store) == 0  # on all cells: every run claim holds
    subset = tmp_path / "subset"
    (subset / "records").mkdir(parents=True)
    for r in load_records(store):
        if r["attack_label"] != "A" or r["defense_label"] != "none" or r["seed"] == 0:
            write(subset, r)  # A undefended on one seed: its interval is undefined
    claims = str(tmp_path / "synthetic.claims.yaml")
    capsys.readouterr()
    # one seed has no interval: "separated" cannot be judged (diff's "not judged"), a warning
    assert main(["check", str(subset), "--claims", claims, "--against", str(store)]) == 0
    assert verdicts(subset)["noise-helps"] == NOT_JUDGED
    assert "noise-helps held in the reference and is not judged now" in capsys.readouterr().err
    assert main(["check", str(subset), "--claims", claims, "--against-records", str(store)]) == 0
    t = json.loads(TEMPLATE.read_text())
    write(subset, record(t, 1, "A", "none", 0, 8.0))  # now a real regression of seed 0
    capsys.readouterr()
    assert main(["check", str(subset), "--claims", claims, "--against-records", str(store)]) == 1
    assert "claim a-leaks held in the reference" in capsys.readouterr().err


def test_a_held_claim_whose_seeds_all_crashed_is_broken_not_merely_not_run(store, capsys):
    t = json.loads(TEMPLATE.read_text())
    for seed in range(3):
        write(store, record(t, 10 + seed, "B", "none", seed, 30.0))
    assert check(store) == 0 and verdicts(store)["b-labels"] == HOLDS
    for seed in range(3):  # every B seed crashes: no label accuracy, and no floor for it
        write(store, record(t, 10 + seed, "B", "none", seed, None, "error"))
    capsys.readouterr()
    assert check(store, "--accept") == 1
    assert verdicts(store)["b-labels"] == NOT_RUN
    assert "claim b-labels held in the reference" in capsys.readouterr().err


def test_against_records_refuses_cells_the_reference_lacks(store, tmp_path, capsys):
    subset = tmp_path / "subset"
    (subset / "records").mkdir(parents=True)
    t = json.loads(TEMPLATE.read_text())
    write(subset, record(t, 99, "A", "none", 0, 5.0))  # a cell id the reference never ran
    claims = str(tmp_path / "synthetic.claims.yaml")
    assert main(["check", str(subset), "--claims", claims, "--against-records", str(store)]) == 2
    assert "have no record in" in capsys.readouterr().err


def _copy_records(tmp_path: Path, suites: list[str], keep=lambda r: True) -> Path:
    folder = tmp_path / "+".join(suites)
    (folder / "records").mkdir(parents=True)
    for suite in suites:
        for path in (ROOT / "results" / suite / "records").glob("*.json"):
            if keep(json.loads(path.read_text())):
                (folder / "records" / path.name).write_bytes(path.read_bytes())
    return folder


def test_a_held_ordering_whose_other_side_did_not_run_is_a_warning(tmp_path, capsys):
    """batch-1-easier-than-2 without the batch-2 cells is `not run`; it was counted as broken
    (its batch-1 side had seeds) and the command exited 1 with nothing regressed."""
    folder = _copy_records(tmp_path, ["paper-dlg"], lambda r: r["batch_size"] != 2)
    assert main(["check", str(folder), "--against", str(ROOT / "results" / "paper-dlg")]) == 0
    err = capsys.readouterr().err
    assert "batch-1-easier-than-2 held in the reference and is not run now" in err
    assert "0 held claim(s) broken" in err


def test_a_metric_without_values_is_not_reported_as_no_cell_ran(tmp_path, capsys):
    """LPIPS without its weights is n/a on every seed: the claim said "no cell ran" though
    they ran, and `table --value lpips` printed a grid of n/a."""
    folder = _copy_records(tmp_path, ["paper-dlg"])
    (tmp_path / "lpips.claims.yaml").write_text(
        "claims:\n  - id: lpips-low\n    paper: X\n    sentence: LPIPS is low.\n"
        "    where: {attack: \"dlg(steps=300)\", defense: none, batch_size: 1}\n"
        "    metric: lpips\n    expect: {at_most: 0.2}\n")
    (outcome,) = check_claims(load_claims(str(tmp_path / "lpips.claims.yaml")).claims,
                              load_records(folder))
    assert outcome.verdict == NOT_RUN and outcome.cells > 0
    assert outcome.measured() == f"lpips n/a on the {outcome.cells} cell(s) that ran"
    assert main(["table", str(folder), "--value", "lpips"]) == 2
    assert "--value lpips: n/a on every one of the" in capsys.readouterr().err


def test_paper_claims_do_not_pool_other_suites_configurations(tmp_path):
    """In a folder merged from paper-rgap and rgap, rgap's dlg(steps=5) seeds joined the
    paper's DLG side of rgap-beats-dlg-cnn6 (n=10 instead of 5); merged with attacks, the
    DLG paper's claims took in its dlg(min_rel_improvement=…,steps=300) cells."""
    for paper, other in (("paper-rgap", "rgap"), ("paper-dlg", "attacks")):
        merged = _copy_records(tmp_path, [paper, other])
        alone = _copy_records(tmp_path, [paper])
        claims = [c for c in load_claims(paper).claims
                  if "dlg" in str(c.where) + str(c.better_than)]
        assert claims
        for mine, ref in zip(check_claims(claims, load_records(merged)),
                             check_claims(claims, load_records(alone))):
            assert (mine.other or mine.value).n == (ref.other or ref.value).n, mine.claim.id
            assert mine.verdict == ref.verdict, mine.claim.id


def test_the_latex_label_of_an_odd_claims_name_compiles(tmp_path):
    from bench.claims.render import render_latex

    tex = render_latex("my claims#1%", [])
    assert "\\label{tab:check-my-claims-1-}" in tex


def test_the_records_suites_claims_are_built_in_ones_each_claim_once(tmp_path, capsys,
                                                                   monkeypatch):
    """A folder of paper-dlg records and one nightly record: the nightly claims include the
    paper's, which were then refused as '--claims: two files give the same claim id'
    although no --claims was given. A suite without built-in claims is named, never read as
    a path of the working directory."""
    folder = _copy_records(tmp_path, ["paper-dlg"])
    first = sorted((folder / "records").glob("*.json"))[0]
    record = json.loads(first.read_text())
    first.write_text(json.dumps({**record, "suite": "nightly"}))
    assert main(["check", str(folder)]) == 0
    report = (folder / "check.json").read_text()
    ids = [c.id for c in load_claims("nightly").claims]
    assert all(report.count(f'"{i}"') == 1 for i in ids)  # each paper claim once
    # a suite with no built-in claims beside one with: a warning, the other's claims checked
    quick = _copy_records(tmp_path, ["paper-idlg", "quick"])
    assert main(["check", str(quick)]) == 0
    assert "no built-in claims for suite(s) 'quick'" in capsys.readouterr().err
    # only such suites: one line, exit 2, even where the working directory has a folder of
    # the suite's name
    only = _copy_records(tmp_path, ["quick"])  # the folder tmp_path/quick
    monkeypatch.chdir(only.parent)
    assert main(["check", "quick"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("no built-in claims for the records' suite(s) 'quick'; give --claims")


def test_a_file_reached_twice_through_includes_gives_its_claims_once(tmp_path):
    """A diamond (top includes left and right, both include base) read base's claim twice
    and refused it as "given twice"; two different claims of one id are still refused."""
    claim = ("claims:\n  - {id: x-succeeds, paper: P, sentence: S, where: {attack: dlg},\n"
             "     metric: psnr, expect: {at_least: 20}}\n")
    (tmp_path / "base.yaml").write_text(claim)
    (tmp_path / "left.yaml").write_text("include: [base.yaml]\n")
    (tmp_path / "right.yaml").write_text("include: [base.yaml]\n")
    (tmp_path / "top.yaml").write_text("include: [left.yaml, right.yaml]\n")
    assert [c.id for c in load_claims(str(tmp_path / "top.yaml")).claims] == ["x-succeeds"]
    (tmp_path / "right.yaml").write_text(claim.replace("at_least: 20", "at_least: 30"))
    with pytest.raises(ClaimsError, match="claim id 'x-succeeds' is given twice"):
        load_claims(str(tmp_path / "top.yaml"))
    (tmp_path / "twice.yaml").write_text("include: [base.yaml]\n" + claim)
    with pytest.raises(ClaimsError, match="given twice"):  # a file repeating what it includes
        load_claims(str(tmp_path / "twice.yaml"))


def test_a_chain_of_diamonds_reads_each_file_once(tmp_path, monkeypatch):
    """f0 includes f1 twice, f1 includes f2 twice, ...: every include was read again, 2^depth
    reads (depth 16 took 46 s, depth 40 would take years); now each file is read once."""
    from bench.claims import schema

    depth = 12  # the old reading: 8 191 reads, seconds; so a regression fails, not hangs
    (tmp_path / f"f{depth}.yaml").write_text(
        "claims:\n  - {id: x-succeeds, paper: P, sentence: S, where: {attack: dlg},\n"
        "     metric: psnr, expect: {at_least: 20}}\n")
    for i in range(depth):
        (tmp_path / f"f{i}.yaml").write_text(f"include: [f{i + 1}.yaml, f{i + 1}.yaml]\n")
    reads = []
    real = schema.read_suite_text
    monkeypatch.setattr(schema, "read_suite_text", lambda p, *a: reads.append(p) or real(p, *a))
    assert [c.id for c in load_claims(str(tmp_path / "f0.yaml")).claims] == ["x-succeeds"]
    assert len(reads) == depth + 1


def test_a_reference_that_is_not_a_regular_file_or_too_large_is_one_line(store, tmp_path,
                                                                        capsys, monkeypatch):
    """--against /dev/zero filled the memory and a FIFO hung (a bad-input hunt); the site
    reads check.json through the same reader (a nested one was a RecursionError there)."""
    import os

    from bench.claims import render
    from bench.registry import LeakbenchError
    from bench.site.claims import read_claims

    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    claims = str(tmp_path / "synthetic.claims.yaml")
    assert main(["check", str(store), "--claims", claims, "--against", str(fifo)]) == 2
    assert "pipe.json: not a check.json (not a regular file)" in capsys.readouterr().err
    big = tmp_path / "big.json"
    big.write_text(" " * 101)
    monkeypatch.setattr(render, "MAX_CHECK_BYTES", 100)
    assert main(["check", str(store), "--claims", claims, "--against", str(big)]) == 2
    assert "big.json: not a check.json (larger than 100 bytes)" in capsys.readouterr().err
    monkeypatch.setattr(render, "MAX_CHECK_BYTES", 10 ** 6)
    (tmp_path / "check.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LeakbenchError, match="not a check.json .RecursionError"):
        read_claims(tmp_path)


def test_summary_counts_not_judged_only_when_there_is_one():
    """The summary line keeps its committed bytes when no claim is ``not judged``."""
    from bench.claims.evaluate import Outcome
    from bench.claims.render import summary
    from bench.claims.schema import Claim
    from bench.leaderboard.uncertainty import Interval
    claim = Claim("a", "p", "s", {"attack": ["dlg"]}, "psnr", at_least=1.0)
    iv = Interval(1.0, None, None, 1)
    assert summary([Outcome(claim, HOLDS, iv)]) == "1 hold, 0 do not hold, 0 not run (1 claims)"
    assert summary([Outcome(claim, HOLDS, iv), Outcome(claim, NOT_JUDGED, iv)]) == \
        "1 hold, 0 do not hold, 0 not run, 1 not judged (2 claims)"


def test_cells_on_one_private_batch_count_as_one_seed(store):
    """Two noise defenses on the same three private batches (the same scenario seeds) are
    three seeds, not six: pooled as six they narrowed the interval by √2·t(5)/t(2), and a
    separated ordering held on intervals that the private batches do not support."""
    t = json.loads(TEMPLATE.read_text())
    for seed, v in enumerate([10.5, 11.5, 12.5]):  # a second noise on seeds 0–2
        write(store, record(t, 20 + seed, "A", "noise(scale=0.2)", seed, v))
    claims = load_claims(str(store.parent / "synthetic.claims.yaml")).claims
    (noise,) = [c for c in claims if c.id == "noise-helps"]
    (out,) = check_claims([noise], load_records(store))
    assert out.other.n == 3 and out.other_cells == 6
    assert out.other.mean == pytest.approx(11.25)
    per_batch = [10.25, 11.25, 12.25]  # each batch's two noises at their mean
    from bench.leaderboard.uncertainty import t_interval
    assert out.other.half == pytest.approx(t_interval(per_batch).half)


def test_a_success_rate_has_a_wilson_interval_that_never_collapses(store):
    """0/3 and 3/3 read ± 0.00 under a t-interval of 0/1 values; Wilson's keeps a width,
    so that 2/2 against 0/2 is no separation."""
    from bench.leaderboard.uncertainty import clearly_better, wilson_interval

    none = wilson_interval([0.0] * 8)
    assert none.low == 0.0 and none.high == pytest.approx(0.3244, abs=1e-4)  # z = 1.96
    all_ = wilson_interval([1.0] * 2)
    assert all_.low == pytest.approx(0.3424, abs=1e-4) and all_.high == 1.0
    assert not clearly_better(all_, wilson_interval([0.0] * 2), True)  # 2/2 vs 0/2: no verdict
    assert wilson_interval([0.0] * 100).low == 0.0 and wilson_interval([1.0] * 100).high == 1.0
    assert wilson_interval([1.0]).low is None and wilson_interval([]).mean is None
    claims = load_claims(str(store.parent / "synthetic.claims.yaml")).claims
    out = {o.claim.id: o for o in check_claims(claims, load_records(store))}
    assert out["a-leaks"].measured() == "3/3 = 1.00 [0.44, 1.00]"


def _two_sides(tmp_path: Path, none: list[float], noise: list[float], noise_seeds: list[int]
               ) -> Path:
    t = json.loads(TEMPLATE.read_text())
    folder = tmp_path / "paired"
    (folder / "records").mkdir(parents=True)
    for n, (seed, v) in enumerate(enumerate(none), 1):
        write(folder, record(t, n, "A", "none", seed, v))
    for n, (seed, v) in enumerate(zip(noise_seeds, noise), 100):
        write(folder, record(t, n, "A", "noise(scale=0.1)", seed, v))
    return folder


def test_a_separated_ordering_on_shared_private_batches_is_a_paired_test(tmp_path):
    """Noise costs every private batch about 1 dB, but the batches themselves range over 20 dB:
    the two sides' intervals overlap, the per-batch differences do not straddle 0. The harness
    runs both defenses on the same batches (common random numbers), so the paired test is
    the one that applies; on batches one side lacks, the intervals must still be apart."""
    claims = load_claims_text(tmp_path)
    none, noise = [20.0, 30.0, 40.0, 25.0], [19.0, 28.8, 39.1, 24.0]
    (paired,) = check_claims(claims, load_records(_two_sides(tmp_path, none, noise, [0, 1, 2, 3])))
    assert paired.value.low < paired.other.high  # the unpaired intervals overlap
    assert paired.verdict == HOLDS and paired.difference.n == 4
    assert paired.difference.mean == pytest.approx(1.025)
    assert 0 < paired.difference.low < paired.difference.high < 2
    assert "; paired difference 1.02 ± " in paired.measured()
    assert paired.row()["difference"]["n"] == 4
    other = tmp_path / "unpaired"
    other.mkdir()
    (unpaired,) = check_claims(claims, load_records(_two_sides(other, none, noise, [4, 5, 6, 7])))
    assert unpaired.difference is None and unpaired.verdict == FAILS  # intervals overlap
    assert unpaired.row()["difference"] is None


def load_claims_text(tmp_path: Path) -> list:
    only = CLAIMS.split("  - id: noise-helps")[1].split("  - id: b-labels")[0]
    path = tmp_path / "one.claims.yaml"
    path.write_text("suite: synthetic\nclaims:\n  - id: noise-helps" + only)
    return load_claims(str(path)).claims


def test_a_separated_share_claim_is_not_decided_by_a_point_of_paired_differences():
    """Label accuracy 1 against 0 on the same two batches: the paired differences (1, 1) made
    a t-interval [1, 1], "holds" after two seeds, while Wilson's intervals overlap."""
    import pandas as pd

    from bench.claims.evaluate import evaluate
    from bench.claims.schema import Claim

    rows = [{"attack": a, "attack_name": a, "scenario_seed": s, "value:label_acc": v}
            for s in ("1", "2") for a, v in (("idlg", 1.0), ("dlg", 0.0))]
    claim = Claim("x", "p", "s", {"attack": ["idlg"]}, "label_acc",
                  better_than={"attack": ["dlg"]}, separated=True)
    outcome = evaluate(claim, pd.DataFrame(rows))
    assert outcome.verdict == "does not hold" and outcome.difference is None
    assert "1.00 [0.34, 1.00] (n=2) vs 0.00 [0.00, 0.66] (n=2)" in outcome.measured()
