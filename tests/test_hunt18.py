"""Defects found in session 62's hunts, each with a test that fails on the code before it."""

from __future__ import annotations

import pytest
import torch

from bench.leaderboard import utility_frame  # noqa: F401  (imports the leaderboard package)
from bench.store import load_records
from helpers import make_suite


@pytest.mark.parametrize("factor", [1e30, 1e-30, -1e25, 1e-14, 1e-22])
def test_update_cosine_survives_float32_norm_overflow_and_underflow(tmp_path, factor):
    """A defense that scales the update by 1e30 keeps its direction, yet the recorded cosine
    was 0.0: float32's norm overflowed to inf (1e-30: it underflowed to 0)."""
    from bench.contracts import Defense
    from bench.registry import DEFENSES, register_defense
    from bench.runner import run_suite

    @register_defense("rescale")
    class Rescale(Defense):
        """Multiplies the update by a constant (direction kept)."""

        def transform_update(self, update, ctx):
            out = update.clone()
            out.tensors = [t * factor for t in update.tensors]
            return out

    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 16}}],
                       defenses=["rescale"], attacks=[{"dlg": {"steps": 1}}],
                       utility={"steps": 1, "batch_size": 8, "lr": 0.01, "eval_size": 20})
    try:
        run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    finally:
        DEFENSES.unregister("rescale")
    (record,) = [r for r in load_records(tmp_path) if r.get("kind") == "utility"]
    assert record["metrics"]["update_cosine"] == pytest.approx(1.0 if factor > 0 else -1.0,
                                                               abs=1e-6)


def test_update_cosine_keeps_float32_values_where_the_norms_are_finite():
    """The guard does not move ordinary cosines (committed records stay comparable)."""
    from bench.cells.utility import update_cosine

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(5000, generator=gen), torch.randn(5000, generator=gen)
    b += a
    expected = float(torch.nn.functional.cosine_similarity(a, b, dim=0, eps=1e-12))
    assert update_cosine(a, b) == expected
    a[7] = float("nan")
    assert update_cosine(a, b) is None


@pytest.mark.parametrize("defense, reason", [
    ({"topk": {"fraction": 0.0}}, "the first layer's gradient is all zero"),
    ({"noise": {"scale": 1e39}}, "no span to check tokens against in a non-finite update"),
])
def test_dager_given_nothing_diverges_and_says_why(tmp_path, defense, reason):
    """DAGER on an all-zero update was recorded `ok` (ROUGE-1 0, an empty span judged as a
    batch), and on an update that overflowed float32 an `error` from a failed SVD, where the
    other closed forms (analytic, R-GAP) diverge and say why."""
    from bench.runner import run_suite

    suite = make_suite(datasets=[{"pydoc": {"task": "classify", "seq_len": 6,
                                            "vocab_size": 200, "classes": 4}}],
                       archs=[{"transformer": {"width": 32, "layers": 1, "heads": 2}}],
                       defenses=[defense], attacks=["dager"], seeds=1)
    run_suite(suite, tmp_path, jobs=0, device="cpu", progress=False)
    (record,) = load_records(tmp_path)
    assert record["status"] == "diverged"
    assert record["error"].startswith(reason)


def _torch_cubic(a, b, bounds):
    from torch.optim.lbfgs import _cubic_interpolate

    f64 = torch.float64
    return float(_cubic_interpolate(a.t, a.f, torch.tensor(a.gtd, dtype=f64), b.t, b.f,
                                    torch.tensor(b.gtd, dtype=f64), bounds=bounds))


def test_cubic_step_on_a_linear_stretch_clips_to_the_bound_as_torch_does():
    """Equal slopes at both ends (a linear piece of an L1 loss): the cubic's minimiser is
    ±inf, which torch's 0-d tensors clip to a bound (10 t when extrapolating); Python's
    ZeroDivisionError made it the interval's midpoint, so the search left torch's path."""
    from attacks.strong_wolfe import Point, cubic_minimiser

    a, b = Point(0.0, 1.0, -1.0), Point(1.0, 0.0, -1.0)
    assert cubic_minimiser(a, b, (1.01, 10.0)) == _torch_cubic(a, b, (1.01, 10.0)) == 10.0
    gen = torch.Generator().manual_seed(3)
    for _ in range(500):  # generic, equal-slope and equal-loss points agree with torch's
        t1, t2, f1, f2, g1, g2 = torch.randn(6, generator=gen, dtype=torch.float64).tolist()
        choice = int(torch.randint(3, (1,), generator=gen))
        g2 = g1 if choice == 1 else g2
        f2 = f1 if choice == 2 else f2
        a, b = Point(t1, f1, g1), Point(t2, f2, g2)
        bounds = (min(t1, t2), max(t1, t2) + 5.0)
        expected = _torch_cubic(a, b, bounds)
        if expected == expected:  # torch's NaN (0/0) is the one case kept at the midpoint
            assert cubic_minimiser(a, b, bounds) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_a_loss_of_zero_stops_a_trial_only_below_a_declared_floor():
    """A trial whose loss was exactly 0.0 stopped as converged, though its objective could go
    lower (‖y − 1‖² − 2 at y = 0, gradient −2): torch goes on to −2. The stop is now the
    objective's declared ``loss_floor`` (DLG's squared distance: 0)."""
    from attacks.batched_lbfgs import run_batched_lbfgs

    def objective(v):
        return ((v[0] - 1) ** 2).sum(1) - 2

    for floor, expected in ((None, -2.0), (0.0, 0.0)):
        y = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
        trial = run_batched_lbfgs([y], objective, 5, loss_floor=floor).trials[0]
        assert trial.final_loss == pytest.approx(expected, abs=1e-9)
        assert (trial.stop_reason == "zero_loss") == (floor is not None)


def test_a_defense_that_fails_every_cell_is_not_ranked_most_private(tmp_path):
    """A plug-in defense whose update lost a tensor failed every cell at setup; those seeds
    borrowed the scenario's grey-guess floor, so the Defenses table ranked the broken
    defense above `none`, and Success read 0/n as if every attack had failed against it."""
    from bench.contracts import Defense
    from bench.leaderboard import aggregate_frame, records_frame
    from bench.registry import DEFENSES, register_defense
    from bench.runner import run_suite

    @register_defense("droptensor")
    class DropTensor(Defense):
        """Returns one tensor fewer than the model has parameters."""

        def transform_update(self, update, ctx):
            out = update.clone()
            out.tensors = update.tensors[:-1]
            return out

    try:
        run_suite(make_suite(defenses=["none", "droptensor"], seeds=2), tmp_path, jobs=0,
                  device="cpu", progress=False)
    finally:
        DEFENSES.unregister("droptensor")
    records = load_records(tmp_path)
    broken = [r for r in records if r["defense_label"] == "droptensor"]
    assert broken and all(r["status"] == "error" and r["error"].startswith("setup: ")
                          for r in broken)
    agg = aggregate_frame(records_frame(records)).set_index("defense")
    row = agg.loc["droptensor"]
    assert pd_isna(row["psnr"]) and row["psnr_n"] == 0 and row["n_attacked"] == 0
    assert row["failed"] == 2 and pd_isna(row["success"])
    assert agg.loc["none", "defense_rank_best"] == 1  # the broken defense ranks below it
    assert row["defense_rank_best"] == 2
    from bench.leaderboard import write_leaderboard

    text = write_leaderboard(tmp_path).read_text()
    assert "failed before the attack ran" in text and "| 0/0 " in text


def pd_isna(v) -> bool:
    import pandas as pd

    return bool(pd.isna(v))


def test_a_claim_on_success_leaves_out_seeds_never_attacked(tmp_path):
    """`check` counted a seed whose setup failed as an unsuccessful attack (value 0)."""
    import math

    from bench.claims.evaluate import claims_frame

    records = [{**r, "status": "error", "error": "setup: ValueError: a broken defense",
                "metrics": None} if i == 0 else r
               for i, r in enumerate(_two_seed_records(tmp_path))]
    values = claims_frame(records, {"success"})["value:success"].tolist()
    assert math.isnan(values[0]) and all(v in (0.0, 1.0) for v in values[1:])


def _two_seed_records(out) -> list[dict]:
    from bench.runner import run_suite

    run_suite(make_suite(seeds=2), out, jobs=0, device="cpu", progress=False)
    return sorted(load_records(out), key=lambda r: r["cell_id"])


def test_diff_names_cells_by_their_whole_scenario(tmp_path):
    """Two new cells that differ only in batch size (or client mode) read alike in diff's
    cell lists, and a cell's CSV line left the scenario columns empty."""
    import csv
    import io

    from bench.diff import diff
    from bench.diff_report import render
    from bench.runner import run_suite

    run_suite(make_suite(seeds=1), tmp_path / "a", jobs=0, device="cpu", progress=False)
    run_suite(make_suite(seeds=1, batch_size=[1, 2]), tmp_path / "b", jobs=0, device="cpu",
              progress=False)
    d = diff(tmp_path / "a", tmp_path / "b")
    (new,) = [c for c in d.cells if c.change == "new"]
    assert " · batch 2 · " in new.label
    rows = [r for r in csv.DictReader(io.StringIO(render(d, "csv"))) if r["kind"] == "cell"]
    line = next(r for r in rows if r["cell_id"] == new.cell_id)
    assert line["batch_size"] == "2" and line["mode"] == "fedsgd" and line["attack"]


def test_a_broken_plug_in_is_named_as_itself_not_as_the_suites_first_attack(tmp_path):
    """A broken installed plug-in stopped `run smoke` with "smoke.yaml: attacks[0]: plug-in
    … failed to load", blaming the suite's first attack (another component)."""
    from helpers import run_cli, write_plugin

    root = write_plugin(tmp_path, "leakbench_brokenattack", "import no_such_library_here\n",
                        "[leakbench.attacks]\nbrokenattack = leakbench_brokenattack\n")
    out = run_cli("run", "smoke", "--dry-run", extra_path=root)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("leakbench: error: plug-in brokenattack = leakbench_brokenattack")
    assert "smoke.yaml" not in line and "attacks[0]" not in line


def test_a_resume_warns_of_finished_cells_run_with_another_plug_in_version(tmp_path):
    """After a plug-in was upgraded, a resume pooled the cells it had run at the old version
    with new ones, without a word: only leakbench's own commit was compared."""
    from helpers import PLUGIN, run_cli, write_plugin, write_suite

    (tmp_path / "plug").mkdir()
    root = write_plugin(tmp_path / "plug", "leakbench_versioned", PLUGIN,
                        "[leakbench.defenses]\nflip = leakbench_versioned\n")
    suite = write_suite(tmp_path / "s.yaml", seeds=1, defenses=["flip"])
    out = tmp_path / "out"
    first = run_cli("run", str(suite), "--out", str(out), "--jobs", "0", "--no-leaderboard",
                    extra_path=root)
    assert first.returncode == 0, first.stderr
    info = next(root.glob("*.dist-info"))
    meta = info / "METADATA"
    meta.write_text(meta.read_text().replace("Version: 0.0.1", "Version: 0.0.2"))
    write_suite(suite, seeds=2, defenses=["flip"])
    again = run_cli("run", str(suite), "--out", str(out), "--jobs", "0", "--no-leaderboard",
                    extra_path=root)
    assert again.returncode == 0, again.stderr
    assert ("1 finished cell(s) ran with another version of a plug-in than the one installed "
            "now (e.g. leakbench-versioned 0.0.1, now 0.0.2)") in again.stderr
    (info / "top_level.txt").unlink()  # an editable install's dist-info may not name it:
    for run in range(2):  # the same lookup then and now, so no warning where nothing changed
        write_suite(suite, seeds=3 + run, defenses=["flip"])
        later = run_cli("run", str(suite), "--out", str(out), "--jobs", "0",
                        "--no-leaderboard", extra_path=root)
        assert later.returncode == 0, later.stderr
    assert "another version of a plug-in" not in later.stderr, later.stderr


def test_a_report_is_titled_by_its_suites_as_the_leaderboard_is(tmp_path):
    """report.md was titled by its folder's name (``mineA``) where leaderboard.md named the
    suite (``mine``)."""
    from bench.leaderboard import write_leaderboard
    from bench.report import write_report
    from bench.runner import run_suite

    out = tmp_path / "folder_named_otherwise"
    run_suite(make_suite(), out, jobs=0, device="cpu", progress=False)
    first = write_report(out, fid_layer="64").read_text().splitlines()[0]
    assert first == "# leakbench report: t"
    assert write_leaderboard(out).read_text().splitlines()[0] == "# leakbench leaderboard: t"


def test_a_sentence_that_writes_pad_is_words_not_padding(tmp_path, monkeypatch):
    """A textfolder sentence that wrote "[PAD]" (a tokenizer tutorial) encoded as padding ids:
    an all-[PAD] original, which an empty guess matched with token accuracy 1.0. U+001F split
    words for the metrics (``str.split``) but not for the tokenizer."""
    from bench import textcorpus

    monkeypatch.setattr(textcorpus, "tokenizer_cache", lambda: tmp_path)
    sentences = ("see [PAD] [PAD] and [UNK] here now", "alpha\x1fbeta gamma delta", "w x y z")
    tok = textcorpus.word_tokenizer(sentences, 50)
    ids = tok.encode("[PAD] [PAD] [PAD] [PAD] w w w").ids
    assert 0 not in ids and tok.token_to_id("[PAD]") == 0 and tok.token_to_id("[UNK]") == 1
    assert tok.encode("see [UNK]").tokens == ["see", "[", "unk", "]"]
    assert tok.encode("alpha\x1fbeta").tokens == "alpha\x1fbeta".split()
    assert tok.encode("never seen").ids == [1, 1]  # unknown words are still [UNK]


def test_a_utility_batch_above_the_train_split_is_an_error_for_every_defense():
    """``run_utility`` (the API; a run's preflight refuses such a suite first) with
    utility.batch_size 2000 on 1437 training images: `none` failed ("cannot give 2000 more
    distinct ones") while `dpsgd` finished `ok` at a sampling rate 1.39, dividing every step
    by 2000 with ε None; the pair could not be compared."""
    from bench.cells.utility import run_utility
    from bench.suite import utility_cells
    from helpers import CPU

    suite = make_suite(datasets=[{"digits": {"size": 8}}], archs=[{"mlp": {"hidden": 8}}],
                       defenses=["none", {"dpsgd": {"noise_multiplier": 1.0}}],
                       utility={"steps": 1, "batch_size": 2000, "lr": 0.1, "eval_size": 20})
    cells = utility_cells(suite)
    assert len(cells) == 2
    for cell in cells:
        record = run_utility(cell, CPU)
        assert record.status == "error"
        assert "utility.batch_size 2000 is above the train split's 1437 items" in record.error


def test_epsilon_is_never_below_zero():
    """At δ = 0.5 Opacus's RDP conversion gives ε = −0.53 (σ 1, q 0.01, T 1 000), which a
    table showed as it was."""
    from defenses.dpsgd import dp_epsilon

    eps, note = dp_epsilon(1.0, 0.01, 1000, 0.5, "rdp")
    assert eps == 0.0 and "below 0" in note
    eps, _ = dp_epsilon(1.0, 0.01, 1000, 1e-5, "rdp")
    assert eps == pytest.approx(2.1014, abs=1e-3)


def test_a_table_names_seeds_never_attacked_apart_from_seeds_without_a_floor(tmp_path):
    """`leakbench table` captioned a seed whose setup failed as one with "no floor for psnr"
    once such seeds were left out of the means (a hunt of the paper tables)."""
    import json
    import shutil
    from pathlib import Path

    from bench.leaderboard.pivot import default_caption, pivot

    src = Path(__file__).resolve().parent.parent / "results" / "quick" / "records"
    shutil.copytree(src, tmp_path / "records")
    first = sorted((tmp_path / "records").glob("*.json"))[0]
    record = json.loads(first.read_text())
    record.update(status="error", error="setup: ValueError: a broken defense", metrics=None)
    first.write_text(json.dumps(record))
    caption = default_caption(pivot(load_records(tmp_path), value="psnr"))
    assert "1 seed(s) that failed before the attack ran" in caption
    assert "have no floor" not in caption
