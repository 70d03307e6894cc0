"""Text metrics on hand-made examples, and one-to-one matching of sequences."""

from __future__ import annotations

import pytest
import torch

from bench.metrics import SuccessRule, get_metric
from bench.metrics.exact_match import exact_match
from bench.metrics.rouge1 import rouge1
from bench.metrics.rouge2 import rouge2
from bench.metrics.rougel import rougel
from bench.metrics.token_accuracy import token_accuracy
from bench.text_scoring import match_sequences, score_text, success_rule, text_pairs

VOCAB = ("[PAD]", "[UNK]", "the", "cat", "sat", "on", "mat", "dog", "ran")


def test_token_accuracy_and_exact_match_by_position():
    originals = [["the", "cat", "sat"], ["the", "dog", "ran"], []]
    recons = [["the", "cat", "sat"], ["dog", "the", "ran", "on"], ["the"]]
    assert token_accuracy(originals, recons).tolist() == pytest.approx([1.0, 1 / 3, 1.0])
    assert exact_match(originals, recons).tolist() == [1.0, 0.0, 0.0]


def test_rouge_values_by_hand():
    o, r = [["the", "cat", "sat", "on", "the", "mat"]], [["the", "cat", "on", "the", "mat"]]
    # unigrams: 5 of 6 reference, 5 of 5 candidate → F = 2·(5/6)/(5/6 + 1)
    assert float(rouge1(o, r)[0]) == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))
    # bigrams: reference 5, candidate 4, common ("the cat", "on the", "the mat") = 3
    assert float(rouge2(o, r)[0]) == pytest.approx(2 * (3 / 5) * (3 / 4) / (3 / 5 + 3 / 4))
    assert float(rougel(o, r)[0]) == pytest.approx(2 * (5 / 6) / (5 / 6 + 1))  # LCS = 5
    assert float(rouge1([["the", "cat"]], [["dog", "ran"]])[0]) == 0.0
    for name in ("token_acc", "exact", "rouge1", "rouge2", "rougel"):
        assert get_metric(name).modality == "text"


def test_rouge_counts_the_sequences_own_tokens_in_any_script():
    """rouge-score's default tokenizer keeps only [a-z0-9]: an exact recovery of Russian text
    scored 0, and punctuation tokens were no words."""
    ru = [["это", "море", "гора", "кот", "."]]
    for metric in (rouge1, rouge2, rougel):
        assert float(metric(ru, ru)[0]) == 1.0
    # 2 of 5 reference words, 2 of 4 recovered ([PAD] no word): F = 2·(2/5)(1/2)/(2/5 + 1/2)
    assert float(rouge1(ru, [["это", "море", "[PAD]", "дом", ","]])[0]) == pytest.approx(4 / 9)
    # a token is one word: "__init__" and "." are not split or dropped; case is folded
    o, r = [["the", "__init__", "method", "."]], [["The", "__init__", "method", ","]]
    assert float(rouge1(o, r)[0]) == pytest.approx(0.75)


def test_matching_is_one_to_one_not_greedy():
    originals = torch.tensor([[2, 3, 4], [2, 3, 5]])
    # original 0 agrees equally with both rows (2 positions), original 1 best with row 0
    # (3): matched with replacement both would take row 0
    recon = torch.tensor([[2, 3, 5], [2, 7, 4]])
    order = match_sequences(originals, recon)
    assert sorted(order) == [0, 1]
    assert order == [1, 0]


def test_sentences_are_matched_on_rouge1_as_lamp_and_dager_match_them():
    """Matched on positions that agree, "the cat sat cat" took "the dog the dog" (position 0)
    and the ROUGE-1 pair sum was 0.75; LAMP's and DAGER's evaluations match on ROUGE-1
    (cost 1 − ROUGE-1 F), which pairs them the other way for 1.0 (a text-track hunt)."""
    originals = torch.tensor([[2, 3, 4, 3], [7, 3, 5, 4]])  # the cat sat cat / dog cat on sat
    recon = torch.tensor([[2, 7, 2, 7], [4, 6, 3, 2]])  # the dog the dog / sat mat cat the
    out = score_text(originals, recon, VOCAB, SuccessRule("rouge1", 0.5))
    assert out["matching"] == [1, 0]
    assert out["rouge1"] == pytest.approx(0.5)
    assert match_sequences(originals, recon) == [0, 1]  # on positions alone, the other way


def test_equal_rouge1_sums_are_broken_by_the_positions_that_agree():
    """Both pairings sum to ROUGE-1 2/3 exactly (1/3 + 1/3 and 2/3 + 0); rounded to 6
    decimals the second had won by one unit, and token accuracy read 0 where the pairing the
    documented tie-break picks reads 1/3 (a review)."""
    originals = torch.tensor([[2, 3, 4], [7, 5, 6]])  # the cat sat / dog on mat
    recon = torch.tensor([[2, 8, 1], [3, 4, 6]])  # the ran [UNK] / cat sat mat
    out = score_text(originals, recon, VOCAB, SuccessRule("rouge1", 0.5))
    assert out["matching"] == [0, 1]
    assert out["rouge1"] == pytest.approx(1 / 3) and out["token_acc"] == pytest.approx(1 / 3)


def test_matchings_rouge1_fractions_are_the_metrics_values():
    from bench.metrics.text_common import rouge1_fractions

    gen = torch.Generator().manual_seed(0)
    words = list(VOCAB) + ["The", "CAT"]  # case is folded; [PAD] is no word
    seqs = [[words[int(i)] for i in torch.randint(len(words), (int(n),), generator=gen)]
            for n in torch.randint(0, 7, (12,), generator=gen)]
    num, den = rouge1_fractions(seqs[:6], seqs[6:])
    for i in range(6):
        values = rouge1([seqs[i]] * 6, seqs[6:])
        mine = torch.where(den[i] > 0, num[i] / den[i].clamp_min(1), torch.zeros(6))
        assert torch.allclose(values, mine.double(), atol=1e-12), i


def test_padding_is_no_evidence_in_the_tie_break_either():
    """No position agrees under either pairing; the tie is broken by the real tokens shared,
    not by [PAD]s shared: original 0 (three words, then [PAD]s) goes with the recovery that
    holds its three words, not with the blank one."""
    originals = torch.tensor([[2, 3, 4, 0, 0, 0], [5, 6, 7, 8, 2, 3]])
    recon = torch.tensor([[0, 0, 0, 0, 0, 0], [3, 4, 2, 1, 1, 1]])
    assert match_sequences(originals, recon) == [1, 0]


def test_nothing_past_the_originals_end_is_marked_correct():
    (pair,) = text_pairs(torch.tensor([[2, 3, 0, 0]]), torch.tensor([[2, 3, 0, 7]]), [0],
                         VOCAB)
    assert pair["recovered"] == ["the", "cat", "[PAD]", "dog"]
    assert pair["correct"] == [True, True, False, False]
    from bench.leaderboard.text_tables import token_marks

    old = {**pair, "correct": [True, True, True, False]}  # as older records have it
    assert [ok for _, ok in token_marks(old)] == [True, True, False, False]


def test_score_text_of_a_permuted_exact_batch_is_perfect_and_pads_are_left_out():
    originals = torch.tensor([[2, 3, 4, 0], [2, 7, 8, 5]])
    scored = score_text(originals, originals.flip(0), VOCAB, SuccessRule("rouge1", 0.5))
    assert scored["matching"] == [1, 0]
    for name in ("token_acc", "exact", "rouge1", "rouge2", "rougel"):
        assert scored[name] == pytest.approx(1.0)
    assert scored["success"] is True
    wrong = score_text(originals, torch.tensor([[8, 8, 8, 8], [8, 8, 8, 8]]), VOCAB,
                       SuccessRule("rouge1", 0.5))
    assert wrong["token_acc"] == pytest.approx(1 / 8) and wrong["success"] is False
    pairs = text_pairs(originals, originals, [0, 1], VOCAB)
    assert pairs[0]["original"] == ["the", "cat", "sat"] and all(pairs[0]["correct"])


def test_a_pad_inside_a_recovery_is_a_wrong_token_not_a_shift():
    rule = SuccessRule("rouge1", 0.5)
    originals = torch.tensor([[2, 3, 4, 5, 0, 0]])  # the cat sat on [PAD] [PAD]
    shifted = score_text(originals, torch.tensor([[0, 2, 3, 4, 5, 0]]), VOCAB, rule)
    # no token at its position: dropping the leading [PAD] would have scored it perfect
    assert shifted["token_acc"] == 0.0 and shifted["exact"] == 0.0
    assert shifted["rouge1"] == pytest.approx(1.0)  # ROUGE is position-free; [PAD] no word
    holed = torch.tensor([[2, 0, 4, 5, 0, 0]])  # the [PAD] sat on
    scored = score_text(originals, holed, VOCAB, rule)
    assert scored["token_acc"] == pytest.approx(3 / 4) and scored["exact"] == 0.0
    (pair,) = text_pairs(originals, holed, [0], VOCAB)
    assert pair["recovered"] == ["the", "[PAD]", "sat", "on"]
    assert pair["correct"] == [True, False, True, True]  # the site's marks agree with the metric
    assert sum(pair["correct"]) / len(pair["original"]) == scored["token_acc"]


def test_the_success_rule_is_per_modality():
    assert success_rule("text", SuccessRule()).metric == "rouge1"
    assert success_rule("image", SuccessRule("rouge1", 0.7)).metric == "psnr"
    assert success_rule("text", SuccessRule("exact", 1.0)) == SuccessRule("exact", 1.0)


def test_the_text_protocol_names_every_rule_even_a_plugin_metric_not_installed():
    """Records from a machine with a plug-in metric render here with its name (the image
    protocol did so, the text one raised), and an at-most rule is said too."""
    import pandas as pd

    from bench.leaderboard.text_tables import protocol_text

    rules = [{"metric": "rouge1", "at_least": 0.5}, {"metric": "plugin_score", "at_least": 0.7},
             {"metric": "plugin_loss", "at_most": 2.0}, None]
    (text,) = protocol_text(pd.DataFrame({"success_rule": rules}))
    assert text.endswith("succeeds when its mean ROUGE-1 ≥ 0.5 or plugin_loss ≤ 2 or "
                         "plugin_score ≥ 0.7.")
