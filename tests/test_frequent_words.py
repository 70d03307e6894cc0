"""The text track's reference row: ``frequent_words`` guesses the public split's most frequent
words, never reads the update, and the leaderboard shows it in the attack tables and leaves it
out of the defense ranking."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
import yaml

from attacks.frequent_words import FrequentWords, frequent_guess, majority_label
from bench.grants import PUBLIC_DATA
from bench.leaderboard.aggregate import is_reference, strongest_attacks, summarize_attacks
from bench.leaderboard.tables import reference_notes
from bench.metrics import get_metric
from bench.pipeline import attack
from bench.public import public_data
from bench.registry import DATASETS
from bench.suite import attack_cells, load_suite
from helpers import make_suite, observe_tiny

CLASSIFY = {"pydoc": {"task": "classify", "seq_len": 12, "vocab_size": 1000, "classes": 4}}


def test_the_guess_is_the_most_frequent_tokens_ordered_by_mean_position():
    public = torch.tensor([[5, 7, 9, 0],    # [PAD] (0) is never guessed
                           [7, 5, 9, 3],
                           [9, 5, 7, 0]])
    # counts: 5, 7, 9 three times each, 3 once; mean positions 5: 1.0, 7: 1.0, 9: 4/3, 3: 3
    assert frequent_guess(public, 3).tolist() == [5, 7, 9]
    assert frequent_guess(public, 4).tolist() == [5, 7, 9, 3]
    assert frequent_guess(public, 6).tolist() == [5, 7, 9, 3, 0, 0]  # fewer tokens: [PAD]
    # ties in count go to the lower id: 3 (count 1) loses to 5, 7, 9 (count 3)
    assert frequent_guess(torch.tensor([[2, 2, 8, 8, 4]]), 2).tolist() == [2, 8]
    assert frequent_guess(torch.zeros(2, 3, dtype=torch.long), 2).tolist() == [0, 0]


def test_majority_label_breaks_ties_by_the_lower_label():
    assert majority_label(torch.tensor([2, 1, 2, 1, 0])) == 1
    assert majority_label(torch.tensor([3, 3, 0])) == 3


def _cell(batch: int = 4, task: str = "classify"):
    dataset = {"pydoc": {**CLASSIFY["pydoc"], "task": task}}
    (cell,) = attack_cells(make_suite(datasets=[dataset],
                                      archs=[{"transformer": {"width": 32, "layers": 1}}],
                                      batch_size=batch, attacks=["frequent_words"],
                                      grant=[PUBLIC_DATA]))
    return cell


def test_frequent_words_reads_the_public_split_and_never_the_update():
    cell = _cell()
    assert cell.skip_reason is None
    obs, _ = observe_tiny(cell)
    recon = attack(cell, obs).recon
    dataset = DATASETS.get("pydoc").cls(**CLASSIFY["pydoc"])
    dataset.registry_name = "pydoc"
    public = public_data(dataset)
    guess = frequent_guess(public.images, 12)
    assert recon.data.tolist() == [guess.tolist()] * 4
    assert recon.labels.tolist() == [majority_label(public.labels)] * 4
    assert recon.grad_evals == 0
    # another update (zeroed, or noise) changes nothing: the update is never read
    for tensors in ([torch.zeros_like(t) for t in obs.update.tensors],
                    [torch.randn_like(t) for t in obs.update.tensors]):
        other = dataclasses.replace(obs, update=dataclasses.replace(obs.update, tensors=tensors))
        again = FrequentWords().reconstruct(other)
        assert torch.equal(again.data, recon.data) and torch.equal(again.labels, recon.labels)


def test_frequent_words_on_a_language_model_guesses_no_labels():
    obs, _ = observe_tiny(_cell(batch=2, task="lm"))
    recon = FrequentWords().reconstruct(obs)
    assert recon.labels is None and tuple(recon.data.shape) == (2, 12)


def test_frequent_words_is_skipped_without_the_public_split():
    (cell,) = attack_cells(make_suite(datasets=[CLASSIFY],
                                      archs=[{"transformer": {"width": 32, "layers": 1}}],
                                      attacks=["frequent_words"]))
    assert cell.skip_reason is not None and "public_data" in cell.skip_reason


def test_only_registered_references_are_references():
    assert is_reference("frequent_words")
    assert not is_reference("tag") and not is_reference("dager")
    assert not is_reference("a_plugin_not_installed_here")


def _records(attack_name: str, label: str, defense: str, rouge: list[float]) -> list[dict]:
    return [{"attack": label, "attack_name": attack_name, "defense": defense, "status": "ok",
             "seed": s, "modality": "text", "rouge1": v, "success": False,
             "attack_seconds": 1.0, "grad_evals": 10, "scenario_seed": s}
            for s, v in enumerate(rouge)]


def test_the_defense_ranking_leaves_reference_rows_out_and_the_notes_say_so():
    cells = pd.DataFrame(
        _records("frequent_words", "frequent_words", "noise", [0.3, 0.31, 0.32])
        + _records("tag", "tag", "noise", [0.10, 0.12, 0.11])
        + _records("frequent_words", "frequent_words", "none", [0.3, 0.31, 0.32])
        + _records("dager", "dager", "none", [1.0, 1.0, 1.0]))
    summary = summarize_attacks(cells)
    assert summary.set_index("attack")["reference"].to_dict() == {
        "frequent_words": True, "tag": False, "dager": False}
    best = strongest_attacks(summary, get_metric("rouge1"))
    assert best.set_index("defense")["attack"].to_dict() == {"noise": "tag", "none": "dager"}
    assert best.set_index("defense")["attacks"].to_dict() == {"noise": 1, "none": 1}
    for_attacks, for_defenses = reference_notes(summary)
    assert "frequent_words" in for_attacks and "reads no update" in for_attacks
    assert "left out" in for_defenses
    # where only references ran against a defense, the reference stands (no empty row)
    alone = summary[~((summary["defense"] == "noise") & (summary["attack"] == "tag"))]
    best = strongest_attacks(alone, get_metric("rouge1"))
    assert best.set_index("defense")["attack"].to_dict() == {
        "noise": "frequent_words", "none": "dager"}
    assert reference_notes(summary[~summary["reference"]]) == ("", "")


def test_the_text_suite_runs_the_reference_with_the_public_split_granted():
    suite = load_suite("text")
    names = [a.name for a in suite.attacks]
    assert "frequent_words" in names
    assert PUBLIC_DATA in suite.granted
    # the grant reaches the reference only: the gradient attacks' cells see no public data
    cells = attack_cells(suite)
    assert {c.attack.name for c in cells} == set(names)
    for c in cells:
        assert (PUBLIC_DATA in c.granted) == (c.attack.name == "frequent_words"), c.attack.name


def test_an_empty_public_split_is_an_error_naming_it():
    obs, _ = observe_tiny(_cell(batch=1))
    empty = dataclasses.replace(obs.grant(PUBLIC_DATA), images=torch.zeros(0, 12, dtype=torch.long),
                                labels=torch.zeros(0, dtype=torch.long))
    other = dataclasses.replace(obs, grants={**obs.grants, PUBLIC_DATA: empty})
    with pytest.raises(ValueError, match="the public split holds no sentence"):
        FrequentWords().reconstruct(other)


def _text_records(tmp_path):
    """Records of a frequent_words and a tag cell (undefended and under heavy noise) on the
    tiny transformer: the noise leaves the reference the best mean under it."""
    from bench.cli import main

    suite = tmp_path / "s.yaml"
    suite.write_text(yaml.safe_dump({
        "description": "t", "seed": 0, "seeds": 2, "batch_size": 1, "datasets": [CLASSIFY],
        "archs": [{"transformer": {"width": 32, "layers": 1}}],
        "defenses": ["none", {"noise": {"scale": 10.0}}],
        "attacks": ["frequent_words", {"tag": {"iterations": 2}}], "grant": [PUBLIC_DATA],
        "timeout": 120}))
    out = tmp_path / "o"
    assert main(["run", str(suite), "--out", str(out), "--jobs", "0", "--quiet",
                 "--no-leaderboard"]) == 0
    return out


def test_the_table_export_and_site_tell_a_reference_from_an_attack(tmp_path):
    """`leakbench table` had set the reference bold as the best attack against a defense,
    the aggregated export had no column to tell it, and the site counted it an attack."""
    from bench.leaderboard.export import aggregate_frame
    from bench.leaderboard.frames import records_frame
    from bench.leaderboard.pivot import default_caption, pivot
    from bench.site.build import attack_count
    from bench.store import load_records

    out = _text_records(tmp_path)
    records = load_records(out)
    p = pivot(records)  # rows: defenses, columns: attacks, best per row
    assert p.references == ["frequent_words"]
    refs = p.cells[p.cells["col"] == "frequent_words"]
    assert len(refs) == 2 and not refs["best"].any() and not refs["tied"].any()
    assert "frequent_words, a reference that reads no update" in default_caption(p)
    # the reference's mean is above tag's somewhere, so the old rule would have set it bold
    means = p.cells.pivot(index="row", columns="col", values="mean")
    assert (means["frequent_words"] > means["tag(iterations=2)"]).any()
    agg = aggregate_frame(records_frame(records))
    assert dict(zip(agg["attack"], agg["reference"])) == {"frequent_words": True,
                                                          "tag(iterations=2)": False}
    assert not agg.loc[agg["reference"], "strongest"].any()
    assert attack_count(records_frame(records)) == "1 (+1 reference)"


def test_a_table_pooling_the_attacks_leaves_the_reference_out(tmp_path):
    """With attack on neither axis, `leakbench table` pooled the guess into every mean."""
    from bench.leaderboard.pivot import default_caption, pivot
    from bench.store import load_records

    records = load_records(_text_records(tmp_path))
    pooled = pivot(records, rows="defense", cols="batch_size")
    alone = pivot(records, rows="defense", cols="batch_size",
                  where={"attack": ["tag(iterations=2)"]})
    assert pooled.references == ["frequent_words"]
    assert "Left out: frequent_words, a reference" in default_caption(pooled)
    assert pooled.cells["mean"].tolist() == alone.cells["mean"].tolist()
    assert pooled.cells["n"].tolist() == alone.cells["n"].tolist()
