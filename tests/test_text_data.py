"""The text track's data: the bundled corpus, deterministic splits, the cached tokenizer,
a folder of .txt files through the same component, and the transformer's shapes."""

from __future__ import annotations

import re

import pytest
import torch

from bench import textcorpus
from bench.client import training_loss
from bench.datasets import text_common
from bench.datasets.pydoc_text import PydocText
from bench.datasets.textfolder import TextFolder
from bench.registry import ARCHS, LeakbenchError
from helpers import make_suite, run_cli, write_suite


def test_pydoc_splits_are_deterministic_disjoint_and_both_tasks_share_the_tokenizer():
    lm, topic = PydocText(seq_len=10), PydocText(task="classify", seq_len=10, classes=3)
    x_train, y_train = lm.load("train").tensors
    x_test, _ = lm.load("test").tensors
    assert x_train.shape[1] == 10 and y_train.shape == x_train.shape  # next token per position
    assert torch.equal(x_train[:, 1:], y_train[:, :-1])  # the label is the input shifted by one
    sentences = textcorpus.pydoc_sentences()
    every_5th = len(range(0, len(sentences), 5))  # every 5th sentence is test ...
    assert len(x_train) == len(sentences) - every_5th
    assert 0 < len(x_test) < every_5th  # ... less those a training sequence also has
    vocab = lm.meta().vocab  # the first test sequence is the corpus's first sentence
    words = [vocab[i] for i in x_test[0].tolist() if i > 1]
    assert words and all(w in sentences[0][1].lower() for w in words)
    text_common.prepare.cache_clear()  # rebuilt from scratch: the same tensors
    assert torch.equal(PydocText(seq_len=10).load("train").tensors[0], x_train)
    meta = topic.meta()
    assert meta.num_classes == 3 and len(meta.classes) == 3 and meta.task == "classify"
    assert meta.vocab == lm.meta().vocab and meta.vocab[:2] == ("[PAD]", "[UNK]")
    labels = topic.load("train").tensors[1]
    assert set(labels.tolist()) == {0, 1, 2}


def test_tokenizer_is_cached_by_its_settings_and_the_second_use_hits_the_cache(
        tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKBENCH_CACHE", str(tmp_path))
    textcorpus._load_or_train.cache_clear()
    sentences = ("the cat sat on the mat .", "the dog sat on the log .")
    first = textcorpus.word_tokenizer(sentences, 20)
    files = list((tmp_path / "tokenizers").glob("*.json"))
    assert len(files) == 1
    textcorpus._load_or_train.cache_clear()

    def no_training(*args):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(textcorpus, "_train", no_training)
    second = textcorpus.word_tokenizer(sentences, 20)
    assert second.get_vocab() == first.get_vocab()
    assert second.encode("the cat").ids == first.encode("the cat").ids
    with pytest.raises(AssertionError, match="trained again"):  # other settings: other key
        textcorpus.word_tokenizer(sentences, 12)


def test_a_folder_of_txt_files_loads_through_the_same_component(tmp_path):
    (tmp_path / "birds.txt").write_text("Birds fly over the sea. Birds sing in the morning "
                                        "light. Some birds swim in cold water.\n")
    (tmp_path / "fish.txt").write_text("Fish swim in the deep sea. Fish have fins and "
                                       "gills. Some fish live in rivers.\n")
    ds = TextFolder(root=str(tmp_path), task="classify", seq_len=6, vocab_size=40, classes=2)
    meta = ds.meta()
    assert set(meta.classes) == {"birds", "fish"} and meta.shape == (6,)
    x, y = ds.load("train").tensors
    assert x.shape[1] == 6 and len(x) + len(ds.load("test")) == 6
    with pytest.raises(LeakbenchError, match="textfolder"):
        TextFolder(root=str(tmp_path / "missing")).meta()


def test_sentences_of_other_scripts_are_split_and_pydocs_splits_are_unchanged(monkeypatch):
    """Sentences began only before [A-Z"'(]: a Russian text was one sentence per paragraph.
    A non-ASCII character that is no lower-case letter begins one now; English text, pydoc's
    included, splits as it did."""
    text = "Это море и гора. Это кот и дом! «Кот» спит на окне. это не начало предложения."
    assert textcorpus.prose_sentences(text) == [
        "Это море и гора.", "Это кот и дом!",
        "«Кот» спит на окне. это не начало предложения."]
    assert textcorpus.split_sentences("Ein Satz hier. Über den Fluss. über nichts.") == [
        "Ein Satz hier.", "Über den Fluss. über nichts."]
    # a closing quote, a dash or a symbol after the stop does not begin a sentence
    assert textcorpus.split_sentences("Il a dit « Non ! » et il est parti. Elle répond "
                                      "« Oui. » à sa mère. ¿Qué? 5. – une note. 3. → 4.") == [
        "Il a dit « Non ! » et il est parti.", "Elle répond « Oui. » à sa mère.",
        "¿Qué? 5. – une note. 3. → 4."]
    from pydoc_data.topics import topics

    now = [textcorpus.prose_sentences(topics[n]) for n in sorted(topics)]
    before = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")  # the rule pydoc's results were run with
    monkeypatch.setattr(textcorpus, "split_sentences", before.split)
    assert now == [textcorpus.prose_sentences(topics[n]) for n in sorted(topics)]


@pytest.mark.parametrize("case", ["no sentence", "one topic", "a fifo", "fewer topics"])
def test_an_unusable_textfolder_is_one_line_and_exit_2(tmp_path, case):
    """They raised ValueError while the cells were expanded: a traceback and exit status 1;
    a FIFO named like a text file blocked the run (even --dry-run) for ever."""
    import os

    folder = tmp_path / "text"
    folder.mkdir()
    if case == "a fifo":
        (folder / "a.txt").write_text("This is one sentence here. This is another one here.\n")
        os.mkfifo(folder / "b.txt")
        dataset, expected = {"textfolder": {"root": str(folder)}}, "b.txt: not a regular file"
    elif case == "no sentence":
        (folder / "a.txt").write_text("Too short.\n\nNo.\n")
        dataset, expected = {"textfolder": {"root": str(folder)}}, "hold no sentence"
    elif case == "fewer topics":  # it ran with 2 classes, its label saying classes=4
        for name in ("a", "b"):
            (folder / f"{name}.txt").write_text("This is one sentence here. This is another "
                                                "one here.\n")
        dataset = {"textfolder": {"root": str(folder), "task": "classify", "classes": 4}}
        expected = "classes: 4 topics asked for, but the corpus has 2"
    else:
        (folder / "a.txt").write_text("This is one sentence here. This is another one here.\n")
        dataset = {"textfolder": {"root": str(folder), "task": "classify"}}
        expected = "textfolder: task classify needs at least two topics"
    suite = write_suite(tmp_path / "s.yaml", datasets=[dataset],
                        archs=[{"transformer": {"width": 32}}], attacks=["dager"])
    done = run_cli("run", str(suite), "--out", str(tmp_path / "out"), timeout=120)
    assert done.returncode == 2, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_no_test_sequence_is_also_a_training_sequence(task):
    """pydoc repeats passages (and truncation makes sentences equal): 157 of the lm task's 423
    test sequences at 12 tokens were training sequences too; they are left out of the test
    split, and the training split (private batches, victims) is as it was."""
    ds = PydocText(task=task, seq_len=12, classes=4)
    x_train, y_train = ds.load("train").tensors
    x_test, y_test = ds.load("test").tensors

    def rows(x: torch.Tensor, y: torch.Tensor) -> set[tuple]:
        return {(*a, b[-1]) if task == "lm" else tuple(a)
                for a, b in zip(x.tolist(), y.tolist())}

    assert not rows(x_test, y_test) & rows(x_train, y_train)
    kept = [(i, topic) for i, (topic, _) in enumerate(textcorpus.pydoc_sentences())
            if task == "lm" or topic in ds.meta().classes]
    every_5th = sum(i % 5 == 0 for i, _ in kept)
    assert len(x_train) == len(kept) - every_5th  # the training split is untouched
    assert len(x_test) < every_5th


def test_a_test_sentence_repeated_in_training_is_left_out(tmp_path):
    """The repeated sentence is corpus item 0 (test) and item 1 (train); of the two test
    sentences (items 0 and 5) the test split keeps item 5 only."""
    (tmp_path / "a.txt").write_text("Birds fly over the sea. Birds fly over the sea. Fish swim in "
                                    "the deep. Some birds swim in cold water. Cats sleep all "
                                    "day long. Dogs bark at the moon.\n")
    ds = TextFolder(root=str(tmp_path), task="lm", seq_len=6, vocab_size=40)
    x_train = ds.load("train").tensors[0].tolist()
    (test,) = ds.load("test").tensors[0].tolist()
    assert len(x_train) == 4 and test not in x_train
    vocab = ds.meta().vocab
    assert [vocab[i] for i in x_train[0]][:3] == ["birds", "fly", "over"]


@pytest.mark.parametrize("task", ["lm", "classify"])
def test_transformer_shapes_take_ids_or_embeddings(task):
    meta = PydocText(task=task, seq_len=8).meta()
    arch = ARCHS.get("transformer").cls(width=32, layers=2, heads=4)
    model = arch.build_for(meta)
    arch.init_weights(model, torch.Generator().manual_seed(0))
    ids = torch.randint(0, len(meta.vocab), (3, 8))
    out = model(ids)
    expected = (3, 8, len(meta.vocab)) if task == "lm" else (3, meta.num_classes)
    assert tuple(out.shape) == expected
    assert torch.allclose(model(model.tok(ids)), out, atol=1e-6)  # embeddings in place of ids
    target = torch.randint(0, expected[-1], expected[:-1])
    assert torch.isfinite(training_loss(out, target))
    # causal: a later token never changes an earlier position's output
    changed = ids.clone()
    changed[:, -1] = (changed[:, -1] + 1) % len(meta.vocab)
    if task == "lm":
        assert torch.allclose(model(changed)[:, :-1], out[:, :-1], atol=1e-6)
    with pytest.raises(ValueError, match="text"):
        arch.build((1, 16, 16), 10)


def test_a_width_the_heads_do_not_divide_is_refused_when_the_suite_loads():
    """It was refused when a cell built the model: every cell an error record."""
    with pytest.raises(LeakbenchError, match="width 30 is not divisible by heads 4"):
        make_suite(datasets=[{"pydoc": {"seq_len": 6}}], archs=[{"transformer": {"width": 30}}],
                   attacks=["dager"])
    with pytest.raises(LeakbenchError, match="not divisible"):
        ARCHS.get("transformer").cls(width=30, heads=4)


def test_a_text_folder_keeps_same_named_files_apart_and_reads_no_byte_order_mark(tmp_path):
    """``x/t.txt`` and ``y/t.txt`` were one topic ``t``; a file saved with a UTF-8 byte-order
    mark (Windows editors) began its first sentence with an [UNK] token."""
    from bench.textcorpus import folder_sentences

    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    (tmp_path / "x" / "t.txt").write_text("The cat sat on the mat today.\n", encoding="utf-8")
    (tmp_path / "y" / "t.txt").write_bytes("\ufeffThe dog ran in the park today.\n"
                                           .encode("utf-8"))
    (tmp_path / "top.txt").write_text("A bird sang in the tall tree.\n", encoding="utf-8")
    assert folder_sentences(str(tmp_path)) == (
        ("top", "A bird sang in the tall tree."), ("x/t", "The cat sat on the mat today."),
        ("y/t", "The dog ran in the park today."))


def test_pydoc_victims_are_cached_under_the_corpus_they_trained_on(monkeypatch):
    """The trained-victim cache key held only pydoc's parameters: weights trained on one
    Python's topics (and vocabulary) were reused under another Python's."""
    from bench.datasets.pydoc_text import PydocText
    from bench.registry import ARCHS
    from bench.victim import cache_key

    arch, ds = ARCHS.get("transformer").cls(), PydocText(task="classify")
    before = cache_key(arch, ds, 50, 0)
    monkeypatch.setattr("bench.datasets.pydoc_text.pydoc_sentences",
                        lambda: (("topic", "Another Python documents this otherwise."),))
    assert cache_key(arch, ds, 50, 0) != before
