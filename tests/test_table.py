"""``leakbench table``: one metric pivoted over two axes, numbers as the leaderboard's, best in
bold, ties marked, filters, one-line errors, byte-identical output that pdflatex compiles."""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import random
import re
import shutil
from pathlib import Path

import pytest

from bench.cli import main
from bench.latex import tex
from bench.leaderboard import records_frame, summarize_attacks
from bench.leaderboard.pivot import pivot, render_pivot, write_table
from bench.registry import LeakbenchError
from bench.store import load_records
from helpers import ROOT, pdflatex, require_pdflatex, run_cli

T2 = 4.3027  # t(0.975; 2), from a printed table
H3 = T2 / math.sqrt(3)  # half-width of three values with s = 1


def _template() -> dict:
    path = sorted((ROOT / "results" / "quick" / "records").glob("*.json"))[0]
    return json.loads(path.read_text())


def _record(t: dict, n: int, attack: str, defense: str, seed: int, psnr: float | None,
            status: str = "ok", floor: float | None = None, arch: str = "mlp") -> dict:
    r = copy.deepcopy(t)
    r.update(cell_id=f"{n:016x}", seed=seed, status=status, attack_label=attack,
             defense_label=defense, arch_label=arch, dataset_label="digits", batch_size=1,
             error=None, picture=None, suite="synthetic",
             derived_seeds={"scenario": 1000 + seed + 100 * (arch != "mlp"), "attack": n,
                            "defense": n})  # as a real scenario seed, it names the arch
    r["attack"] = {"name": attack.split("(")[0], "params": {}, "shown": []}
    r["defense"] = [{"name": defense.split("(")[0], "params": {}, "shown": []}]
    r["arch"] = {"name": arch, "params": {}, "shown": []}
    r["client"], r["victim"] = {"mode": "fedsgd", "bn_mode": "train"}, "init"
    r["metrics"] = None if psnr is None else {
        "psnr": psnr, "mse": 10 ** (-psnr / 10), "ssim": 0.5, "label_acc": 1.0,
        "success": psnr >= 20}
    r["floor_metrics"] = None if floor is None else {"psnr": floor, "mse": 10 ** (-floor / 10),
                                                     "ssim": 0.0}
    return r


PSNR = {  # (defense, attack) → the psnr of seeds 0, 1, 2 on mlp (None: see `records`)
    ("none", "A"): [20.0, 21.0, 22.0],  # 21 ± H3
    ("none", "B"): [30.0, 30.0, 30.0],  # 30, a point: clearly above A and C
    ("none", "C"): [10.0, 11.0, 12.0],  # 11 ± H3
    ("noise(scale=0.1)", "A"): [10.0, 12.0, 14.0],  # 12 ± 2·H3, overlaps B: tied
    ("noise(scale=0.1)", "B"): [11.0, 13.0, 15.0],  # 13 ± 2·H3: best
    ("noise(scale=0.1)", "C"): [5.0, 5.0, None],  # seed 2 diverged, floor 2: 4 ± T2, tied
}


def records() -> list[dict]:
    """Six (defense, attack) entries on mlp, three seeds each; a skipped cell (no seed); and
    three lenet records (filtered out by ``arch=mlp``)."""
    t, out, n = _template(), [], 0
    for (defense, attack), values in PSNR.items():
        for seed, v in enumerate(values):
            n += 1
            out.append(_record(t, n, attack, defense, seed, v) if v is not None else
                       _record(t, n, attack, defense, seed, None, "diverged", floor=2.0))
    out.append(_record(t, 100, "C", "none", 3, None, "skipped"))
    out += [_record(t, 200 + s, "A", "none", s, 50.0, arch="lenet") for s in range(3)]
    return out


MLP = {"arch": ["mlp"]}


def _cells(p) -> dict:
    return {(c["row"], c["col"]): c for c in p.cells.to_dict("records")}


def test_values_are_the_hand_computed_means_and_intervals():
    p = pivot(records(), where=MLP)
    assert (p.row_values, p.col_values) == (["none", "noise(scale=0.1)"], ["A", "B", "C"])
    cells = _cells(p)
    a = cells[("none", "A")]
    assert (a["mean"], a["n"]) == (21.0, 3) and a["half"] == pytest.approx(H3, abs=1e-3)
    assert (a["low"], a["high"]) == pytest.approx((21 - H3, 21 + H3), abs=1e-3)
    assert cells[("none", "B")]["half"] == 0.0
    assert cells[("none", "C")]["n"] == 3  # the skipped cell is no seed
    assert cells[("noise(scale=0.1)", "A")]["half"] == pytest.approx(2 * H3, abs=1e-3)
    c = cells[("noise(scale=0.1)", "C")]  # the diverged seed counts at its floor (2 dB)
    assert (c["mean"], c["n"]) == (4.0, 3) and c["half"] == pytest.approx(T2, abs=1e-3)
    assert p.pooled == {}


def test_values_agree_with_the_leaderboards_summary():
    df = records_frame(records())
    summary = summarize_attacks(df[df["arch"] == "mlp"])
    cells = _cells(pivot(records(), where=MLP, value="ssim"))
    for _, r in summary.iterrows():
        c = cells[(r["defense"], r["attack"])]
        assert (c["mean"], c["low"], c["high"], c["n"]) == (
            r["ssim"], r["ssim_ci_low"], r["ssim_ci_high"], r["ssim_n"])


def test_best_is_bold_and_overlapping_intervals_are_tied():
    cells = _cells(pivot(records(), where=MLP))
    flags = {k: (c["best"], c["tied"]) for k, c in cells.items()}
    assert flags == {("none", "A"): (False, False), ("none", "B"): (True, False),
                     ("none", "C"): (False, False),
                     ("noise(scale=0.1)", "A"): (False, True),
                     ("noise(scale=0.1)", "B"): (True, False),
                     ("noise(scale=0.1)", "C"): (False, True)}
    md = render_pivot(pivot(records(), where=MLP), "markdown")
    assert "**30.00 ± 0.00**" in md and f"12.00 ± {2 * H3:.2f} †" in md
    tex = render_pivot(pivot(records(), where=MLP), "latex")
    assert "\\textbf{30.00 $\\pm$ 0.00}" in tex and f"12.00 $\\pm$ {2 * H3:.2f}$^\\dagger$" in tex


def test_best_per_column_lower_is_better_and_none():
    cols = _cells(pivot(records(), where=MLP, best="col"))
    assert [k for k, c in cols.items() if c["best"]] == [
        ("none", "A"), ("none", "B"), ("none", "C")]
    assert not any(c["tied"] for c in cols.values())  # none's intervals clear noise's
    mse = _cells(pivot(records(), where=MLP, value="mse"))  # lower is better: same winners
    assert [k for k, c in mse.items() if c["best"]] == [("none", "B"), ("noise(scale=0.1)", "B")]
    assert not any(c["best"] or c["tied"] for c in
                   pivot(records(), where=MLP, best="none").cells.to_dict("records"))


def test_cells_a_pooled_axis_puts_on_one_private_batch_are_one_seed():
    """Pooled over defenses, attack A's cells on mlp are 3 private batches, not 6 seeds: each
    batch's two defenses enter at their mean (none 20/21/22, noise 10/12/14 → 15, 16.5, 18)."""
    t = _template()
    recs = [_record(t, 10 * i + s, "A", d, s, v) for i, (d, vs) in enumerate(
        [("none", [20.0, 21.0, 22.0]), ("noise(scale=0.1)", [10.0, 12.0, 14.0])])
        for s, v in enumerate(vs)]
    (cell,) = pivot(recs, rows="attack", cols="arch").cells.to_dict("records")
    assert cell["n"] == 3 and cell["mean"] == pytest.approx(16.5)
    assert cell["half"] == pytest.approx(1.5 * H3, rel=1e-4)  # batch means 15, 16.5, 18: s 1.5
    assert "a seed is a private batch" in render_pivot(pivot(recs, rows="attack", cols="arch"),
                                                        "markdown")


def test_filters_and_the_pooled_axes():
    pooled = pivot(records())
    assert _cells(pooled)[("none", "A")]["n"] == 6 and pooled.pooled == {"arch": ["lenet", "mlp"]}
    assert "Pooled over arch: lenet, mlp" in render_pivot(pooled, "markdown")
    lenet = pivot(records(), rows="arch", cols="defense", where={"attack": ["A"]})
    assert lenet.row_values == ["lenet", "mlp"] and lenet.col_values[0] == "none"
    assert _cells(lenet)[("lenet", "none")]["mean"] == 50.0
    either = pivot(records(), where={"arch": ["mlp"], "attack": ["A", "B"]})
    assert either.col_values == ["A", "B"]
    by_name = pivot(records(), where={"arch": ["mlp"], "defense": ["noise"]})  # registered name
    assert by_name.row_values == ["noise(scale=0.1)"]
    caption = render_pivot(by_name, "latex").split("\\caption{")[1].split("}\n")[0].replace(
        "\\allowbreak{}", "")  # where a label may break (bench.latex.BREAKS)
    assert "Records with arch=mlp, defense=noise." in caption and "n = 3 seeds" in caption


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "results" / "records"
    folder.mkdir(parents=True)
    for r in records():
        (folder / f"{r['cell_id']}.json").write_text(json.dumps(r))
    return tmp_path / "results"


def test_regeneration_is_byte_identical(store, tmp_path):
    for fmt in ("latex", "markdown", "csv"):
        first, _ = write_table(store, where=["arch=mlp"], fmt=fmt, output=tmp_path / "a")
        copy_dir = tmp_path / f"copy-{fmt}"
        shutil.copytree(store, copy_dir)
        second, _ = write_table(copy_dir, where=["arch=mlp"], fmt=fmt, output=tmp_path / "b")
        assert first == second and (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    shuffled = records()
    random.Random(0).shuffle(shuffled)
    assert render_pivot(pivot(shuffled, where=MLP)) == render_pivot(pivot(records(), where=MLP))


def test_a_damaged_record_is_named_and_left_in_place(store, capsys):
    """table only reads the folder (stdout, or --output): it moved damaged records away."""
    damaged = store / "records" / "zz.json"
    damaged.write_text("{")
    text, _ = write_table(store, where=["arch=mlp"], fmt="csv")
    assert text and damaged.exists() and not (store / "records" / "quarantine").exists()
    assert "left in place" in capsys.readouterr().err


def test_csv_has_one_line_per_entry(store):
    text, _ = write_table(store, where=["arch=mlp"], fmt="csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 6 and list(rows[0]) == ["defense", "attack", "metric", "mean",
                                                "half_width", "ci_low", "ci_high", "n",
                                                "best", "tied"]
    assert rows[1] == {"defense": "none", "attack": "B", "metric": "psnr", "mean": "30.0",
                       "half_width": "0.0", "ci_low": "30.0", "ci_high": "30.0", "n": "3",
                       "best": "1", "tied": "0"}


def test_cli_writes_the_file_and_caption_label(store, tmp_path, capsys):
    out = tmp_path / "t.tex"
    assert main(["table", str(store), "--where", "arch=mlp", "--caption", "PSNR 50% & more",
                 "--label", "tab:main", "--output", str(out)]) == 0
    tex = out.read_text()
    assert "\\caption{PSNR 50\\% \\& more}\n\\label{tab:main}\n" in tex
    assert tex.count("\\toprule") == tex.count("\\midrule") == tex.count("\\bottomrule") == 1
    assert main(["table", str(store), "--format", "markdown", "--rows", "attack", "--cols",
                 "defense", "--where", "arch=mlp"]) == 0
    printed = capsys.readouterr()
    assert printed.out.startswith(str(out)) and "| attack   | none" in printed.out
    assert "{#tab:psnr-attack-defense}" in printed.out and printed.err == ""
    assert main(["table", str(store), "--format", "csv"]) == 0
    assert "several values of arch" in capsys.readouterr().err  # pooled: said on stderr, not fatal


@pytest.mark.parametrize("argv, expected", [
    (["--rows", "defence"], "--rows: unknown axis 'defence' (did you mean 'defense'?)"),
    (["--cols", "defense"], "--rows and --cols are both 'defense'"),
    (["--value", "psrn"], "--value: unknown metric 'psrn' (did you mean 'psnr'?)"),
    (["--value", "fid"], "'fid' is pooled over groups of cells"),
    (["--where", "arhc=mlp"], "--where: unknown column 'arhc' (did you mean 'arch'?)"),
    (["--where", "arch"], "--where: expected COLUMN=VALUE, got 'arch'"),
    (["--where", "  "], "--where: expected COLUMN=VALUE, got an empty value"),
    (["--where", ","], "--where: expected COLUMN=VALUE, got an empty value (',')"),
    (["--where", "arch=mlp,"], "--where 'arch=mlp,': an empty condition between commas"),
    (["--where", "arch=mlp,,attack=dlg"], "an empty condition between commas"),
    (["--where", "arch=mlp,arch=lenet"], "--where: arch is given twice; arch=A|B keeps either"),
    (["--where", "arch=mlp", "--where", "arch=lenet"], "--where: arch is given twice"),
    (["--where", "arch=mpl"], "--where: no record has arch='mpl' (did you mean 'mlp'?)"),
    (["--where", "arch=lenet,defense=noise"], "--where arch=lenet, defense=noise: each "
                                               "condition matches records, but no record"),
])
def test_bad_input_is_one_line_and_exit_2(store, capsys, argv, expected):
    assert main(["table", str(store), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("leakbench: error: ") and err.count("\n") == 1 and expected in err


def test_bad_input_from_the_command_line(tmp_path):
    done = run_cli("table", str(tmp_path / "nothing"))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"leakbench: error: {tmp_path / 'nothing'}: no such folder\n"
    done = run_cli("table", str(tmp_path), "--format", "html")
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "html" in done.stderr


def test_tex_escapes_every_special_character_once():
    assert tex("a_b&c%{x}^~$#\\ ± ·") == (
        "a\\_b\\&c\\%\\{x\\}\\textasciicircum{}\\textasciitilde{}\\$\\#\\textbackslash{} "
        "$\\pm$ $\\cdot$")


def test_latex_output_compiles_with_pdflatex(store, tmp_path):
    require_pdflatex()
    rs = records()
    for r in rs:  # labels with every character LaTeX treats specially
        if r["attack_label"] == "C":
            r["attack_label"] = "c_1&{x}^2~50%$#\\"
    (tmp_path / "table.tex").write_text(render_pivot(pivot(rs), "latex"))
    (tmp_path / "grid.tex").write_text(render_pivot(pivot(rs, rows="arch", cols="defense",
                                                          best="col"), "latex"))
    body = "\\input{table}\n\\input{grid}\nSee Table~\\ref{tab:psnr-defense-attack}."
    preamble = "\\usepackage{booktabs}\n\\usepackage{graphicx}"  # as the header says
    assert "needs booktabs and graphicx" in (tmp_path / "table.tex").read_text()
    pdflatex(tmp_path, body, preamble)  # twice: the reference resolves
    log = pdflatex(tmp_path, body, preamble)
    assert (tmp_path / "doc.pdf").stat().st_size > 1000
    assert "undefined" not in log.lower()


def test_a_wide_latex_table_is_scaled_to_the_line(tmp_path):
    """Columns of long attack labels (the attacks suite's ran 833 pt past the line) are
    scaled down to it."""
    require_pdflatex()
    rs = records()
    for r in rs:
        r["attack_label"] = f"{r['attack_label']}(iterations=2000,restarts=2,tv=0.0001)"
    text = render_pivot(pivot(rs, where=MLP), "latex")
    assert "\\resizebox{\\ifdim\\width>\\linewidth" in text
    (tmp_path / "wide.tex").write_text(text)
    log = pdflatex(tmp_path, "\\input{wide}", "\\usepackage{booktabs}\n\\usepackage{graphicx}")
    over = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert max(over, default=0) < 5, over


def test_a_caption_quoting_long_labels_breaks_within_the_line(tmp_path):
    """The default caption quotes the selected labels, which hold no spaces: three noise
    settings ran 279 pt past the line (the leaderboard's and check's captions break them)."""
    require_pdflatex()
    where = ["defense=" + "|".join(f"noise(distribution={d},variance={v})" for d, v in
                                   [("gaussian", 0.0001), ("laplace", 0.0001),
                                    ("gaussian", 0.001)])]
    text, _ = write_table(ROOT / "results" / "paper-dlg", rows="defense", cols="batch_size",
                          where=where, fmt="latex")
    (tmp_path / "t.tex").write_text(text)
    log = pdflatex(tmp_path, "\\input{t}", "\\usepackage{booktabs}\n\\usepackage{graphicx}")
    over = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide", log)]
    assert max(over, default=0) < 5, over


def test_the_readme_example_is_the_committed_results_table():
    readme = (ROOT / "README.md").read_text().split("### `leakbench table`", 1)[1]
    shown = "\n".join(line for line in readme.split("\n## ", 1)[0].splitlines()
                      if line.startswith("|"))
    text, _ = write_table(ROOT / "results" / "quick", where=["arch=lenet,dataset=photos"],
                          fmt="markdown")
    assert text.split("\n\n")[0] == shown


def test_text_records_default_to_rouge1_and_refuse_an_image_metric(capsys):
    """A text folder's table is of ROUGE-1 by default (it was of PSNR: n/a in every cell); an
    image metric on text records is one line, exit 2."""
    text = ROOT / "results" / "text"
    p = pivot(load_records(text), where={"victim": ["init"], "batch_size": ["1"]})
    assert p.metric.name == "rouge1"
    assert p.cells["mean"].notna().all() and p.cells["n"].min() >= 2
    assert main(["table", str(text), "--value", "psnr"]) == 2
    assert capsys.readouterr().err.strip() == (
        "leakbench: error: --value psnr: a metric of image cells, and the records are text "
        "cells (default: rouge1)")


def test_output_through_a_link_or_into_a_fifo_leaves_them_in_place(store, tmp_path, capsys):
    """--output was written to a temporary file renamed over the path: a symbolic link was
    replaced (its target untouched) and a FIFO or a device (/dev/full, found by a bad-input
    hunt) became a regular file."""
    import os
    import stat

    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    assert main(["export", str(store), "--output", str(link)]) == 0
    assert link.is_symlink() and target.read_text().startswith("cell_id")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so the write does not wait
    try:
        assert main(["table", str(store), "--format", "csv", "--output", str(fifo)]) == 0
        assert stat.S_ISFIFO(os.stat(fifo).st_mode)
        assert os.read(reader, 1 << 16).decode().count("\n") >= 2
    finally:
        os.close(reader)
    capsys.readouterr()
    loop = tmp_path / "loop.csv"
    loop.symlink_to(loop)
    assert main(["export", str(store), "--output", str(loop)]) == 2  # a traceback before
    assert capsys.readouterr().err.count("\n") == 1
    assert main(["export", str(store), "--output", "/dev/full"]) == 2  # the error names it
    assert capsys.readouterr().err == ("leakbench: error: /dev/full: No space left on "
                                       "device\n")


def test_output_to_dev_stdout_writes_into_the_pipe(store):
    """/dev/stdout resolved to /proc/<pid>/fd/pipe:[N], which does not exist: exit 2."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "bench.cli", "export", str(store), "--output",
                          "/dev/stdout"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("cell_id") and out.stdout.count("\n") >= 2


def test_the_caption_counts_seeds_of_the_entries_that_have_a_value():
    """An entry whose attack does not report the metric (n/a, n = 0) is no seed count: the
    caption said "n = 0–4 seeds per cell" where every shown entry had 4."""
    import pandas as pd

    from bench.leaderboard.pivot import Pivot, default_caption
    from bench.metrics import get_metric

    cells = pd.DataFrame({"row": ["none"] * 3, "col": ["A", "B", "C"], "n": [0, 4, 4]})
    p = Pivot(get_metric("label_acc"), "defense", "attack", ["none"], ["A", "B", "C"], cells)
    assert "n = 4 seeds per cell" in default_caption(p)
    none = Pivot(get_metric("label_acc"), "defense", "attack", ["none"], ["A"], cells[:1])
    assert "n = n/a seeds per cell" in default_caption(none)
    one = Pivot(get_metric("label_acc"), "defense", "attack", ["none"], ["A"],
                cells[1:2].assign(n=1))
    assert "n = 1 seed per cell" in default_caption(one)  # not "1 seeds"


@pytest.mark.parametrize("caption", ["", "  "])
def test_an_empty_caption_is_refused(caption, store, capsys):
    """``--caption ''`` wrote ``\\caption{}``: a bare "Table 1:" in the paper."""
    from helpers import one_line

    assert one_line(capsys, "table", str(store), "--caption", caption) == (
        "leakbench: error: --caption: empty (leave it out for the default caption)")


@pytest.mark.parametrize("label", ["a}b", "tab:x y", "a\\b", "50%", "a\nb", "a/b", "a+b"])
def test_a_label_latex_or_pandoc_cannot_hold_is_refused(label):
    """--label went into \\label{...} verbatim: exit 0, and LaTeX that did not compile."""
    with pytest.raises(LeakbenchError, match="--label: .* is no LaTeX label"):
        render_pivot(pivot(records()), "latex", label=label)
    assert "\\label{tab:psnr-v2.1_a}" in render_pivot(pivot(records()), "latex",
                                                       label="tab:psnr-v2.1_a")


def test_entries_pooling_different_values_say_which_and_show_their_n():
    """Without ``arch=mlp`` the none/A entry pools mlp and lenet (six seeds), every other
    entry mlp alone: the caption names the uneven pooling, each entry shows its n."""
    p = pivot(records())
    assert p.uneven == {"arch": "arch lenet, mlp in none/A; mlp in the other 5 entries"}
    text = render_pivot(p, "markdown")
    assert "Entries pool different values, so they compare different settings: arch lenet, " \
        "mlp in none/A; mlp in the other 5 entries." in text
    assert "(n=6)" in text and "(n=3)" in text and "(shown where it varies)" in text
    balanced = render_pivot(pivot(records(), where=MLP), "markdown")
    assert "(n=" not in balanced and "pool different values" not in balanced


def test_entries_that_print_the_same_mean_are_both_best():
    """18.7273 and 18.7303 both print 18.73: one bold and one † read as a difference the
    table does not show."""
    t, rs = _template(), []
    for n, (attack, values) in enumerate({"A": [18.7273] * 3, "B": [18.7303] * 3}.items()):
        rs += [_record(t, 10 * n + s, attack, "none", s, v) for s, v in enumerate(values)]
    cells = pivot(rs).cells.set_index("col")
    assert cells.loc["A", "best"] and cells.loc["B", "best"]
    assert not cells.loc["A", "tied"] and not cells.loc["B", "tied"]


def test_a_metric_without_a_floor_says_what_a_failed_seed_counts_as():
    caption = render_pivot(pivot(records(), value="label_acc", where=MLP), "markdown")
    assert "seed counts as 0 (the metric has no floor)" in caption
    assert "counts at its floor" in render_pivot(pivot(records(), where=MLP), "markdown")


def test_a_shares_csv_row_has_its_ends_and_no_half_width(capsys):
    """A Wilson interval is not centred: "mean ± half_width" read [0.98, 1.02] for 100/100."""
    import csv as csv_module
    import io

    assert main(["table", str(ROOT / "results" / "paper-idlg"), "--value", "label_acc",
                 "--format", "csv"]) == 0
    rows = list(csv_module.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows and all(r["half_width"] == "" and r["ci_low"] and r["ci_high"] for r in rows)
    assert all(float(r["ci_high"]) <= 1.0 for r in rows)

