"""The text track's data: the bundled corpus, deterministic splits, the cached tokenizer,
a folder of .txt files through the same component, and the transformer's shapes."""

from __future__ import annotations

import pytest
import torch

from bench import textcorpus
from bench.client import training_loss
from bench.datasets import text_common
from bench.datasets.pydoc_text import PydocText
from bench.datasets.textfolder import TextFolder
from bench.registry import ARCHS, LeakbenchError


def test_pydoc_splits_are_deterministic_disjoint_and_both_tasks_share_the_tokenizer():
    lm, topic = PydocText(seq_len=10), PydocText(task="classify", seq_len=10, classes=3)
    x_train, y_train = lm.load("train").tensors
    x_test, _ = lm.load("test").tensors
    assert x_train.shape[1] == 10 and y_train.shape == x_train.shape  # next token per position
    assert torch.equal(x_train[:, 1:], y_train[:, :-1])  # the label is the input shifted by one
    sentences = textcorpus.pydoc_sentences()
    assert len(x_test) == len(range(0, len(sentences), 5))  # every 5th sentence is test
    assert len(x_train) + len(x_test) == len(sentences)
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
