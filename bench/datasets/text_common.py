"""What every text dataset shares: sentences → token-id sequences, splits, tasks, metadata.

A text dataset yields ``(ids, label)`` pairs: ``ids`` is a LongTensor of ``seq_len`` token
ids (a sentence's first tokens, ``[PAD]``-padded); the label is, for the task

- ``lm`` (next-token language modelling): the next token at every position, the sentence
  shifted by one (a LongTensor of ``seq_len``); the model has a causal mask;
- ``classify`` (sentence classification by topic): the index of the sentence's topic among
  the ``classes`` largest topics of the corpus (ties by name); other topics' sentences are
  left out.

Splits are deterministic, as for the image datasets: every 5th sentence of the corpus (in its
order) is test, the rest train; the tokenizer (:func:`bench.textcorpus.word_tokenizer`) is
trained on the training sentences of every topic, so both tasks share it. A test sequence
whose token ids are also a training sequence's is left out of the test split: corpora repeat
passages (pydoc does), and truncation makes distinct sentences equal, so a utility figure would
otherwise be measured partly on training items. The training split is not touched.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.utils.data import TensorDataset

from bench.contracts import Dataset, DatasetMeta
from bench.preflight import DataError
from bench.registry import Param
from bench.textcorpus import MIN_WORDS, word_tokenizer

TASKS = ("lm", "classify")
TEST_EVERY = 5

TEXT_PARAMS = (
    Param("task", str, "lm", choices=TASKS,
          help="lm: next-token prediction; classify: the sentence's topic"),
    Param("seq_len", int, 12, low=2, high=512, help="tokens per sequence (padded/truncated)"),
    Param("vocab_size", int, 1000, low=8, high=100_000,
          help="word-level vocabulary, [PAD] and [UNK] included"),
    Param("classes", int, 4, low=2, high=64,
          help="classify: the number of topics (the largest ones) used as classes"),
)


@dataclass(frozen=True)
class Prepared:
    meta: DatasetMeta
    train: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]


def encode(tokenizer: object, sentence: str, length: int) -> list[int]:
    """The first ``length`` token ids of ``sentence``, padded with [PAD] (id 0)."""
    ids = tokenizer.encode(sentence).ids[:length]  # type: ignore[attr-defined]
    return ids + [0] * (length - len(ids))


@lru_cache(maxsize=32)
def prepare(corpus: tuple[tuple[str, str], ...], task: str, seq_len: int, vocab_size: int,
            classes: int) -> Prepared:
    """Split, tokenize and encode a corpus of (topic, sentence) pairs for ``task``."""
    if not corpus:
        raise DataError(f"the text corpus has no sentence of at least {MIN_WORDS} words")
    is_test = [i % TEST_EVERY == 0 for i in range(len(corpus))]
    train_text = tuple(s for (_, s), t in zip(corpus, is_test) if not t)
    tok = word_tokenizer(train_text, vocab_size)
    vocab = tuple(t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]))
    if task == "lm":
        topics: tuple[str, ...] = ()
        label_of = None
    else:
        counts = Counter(topic for topic, _ in corpus)
        topics = tuple(sorted(counts, key=lambda t: (-counts[t], t))[:classes])
        if len(topics) < 2:
            raise DataError(f"task classify needs at least two topics (a textfolder's topics "
                            f"are its files); the corpus has {len(topics)}: use task lm or "
                            f"add sentences of another topic")
        if len(topics) < classes:  # else it ran with fewer, its label saying `classes`
            raise DataError(f"classes: {classes} topics asked for, but the corpus has "
                            f"{len(topics)} (a textfolder's topics are its files): give "
                            f"classes: {len(topics)}, or add topics")
        label_of = {t: i for i, t in enumerate(topics)}
    splits: dict[bool, tuple[list, list]] = {False: ([], []), True: ([], [])}
    for (topic, sentence), test in zip(corpus, is_test):
        if label_of is not None and topic not in label_of:
            continue
        xs, ys = splits[test]
        if task == "lm":
            ids = encode(tok, sentence, seq_len + 1)
            xs.append(ids[:-1])
            ys.append(ids[1:])
        else:
            xs.append(encode(tok, sentence, seq_len))
            ys.append(label_of[topic])  # type: ignore[index]
    _drop_seen(splits, task)
    tensors = {t: (torch.tensor(xs, dtype=torch.long).view(-1, seq_len),
                   torch.tensor(ys, dtype=torch.long)) for t, (xs, ys) in splits.items()}
    num_classes = len(vocab) if task == "lm" else len(topics)
    meta = DatasetMeta((seq_len,), num_classes, (), (), topics, modality="text", vocab=vocab,
                       task=task)
    return Prepared(meta, tensors[False], tensors[True])


def _drop_seen(splits: dict[bool, tuple[list, list]], task: str) -> None:
    """Leave out of the test split (``splits[True]``) every sequence the training split holds
    (for ``lm`` the whole encoded sentence: its inputs and next tokens)."""
    def key(k: int, xs: list, ys: list) -> tuple:
        return (*xs[k], ys[k][-1]) if task == "lm" else tuple(xs[k])

    train_x, train_y = splits[False]
    seen = {key(k, train_x, train_y) for k in range(len(train_x))}
    test_x, test_y = splits[True]
    kept = [k for k in range(len(test_x)) if key(k, test_x, test_y) not in seen]
    splits[True] = ([test_x[k] for k in kept], [test_y[k] for k in kept])


class TextDataset(Dataset):
    """Base of the text datasets: :meth:`corpus` gives (topic, sentence) pairs."""

    modality = "text"
    params = TEXT_PARAMS

    def corpus(self) -> tuple[tuple[str, str], ...]:
        raise NotImplementedError

    def prepared(self) -> Prepared:
        try:
            return prepare(self.corpus(), self.task, self.seq_len, self.vocab_size,
                           self.classes)
        except DataError as e:  # one line naming the dataset (the CLI exits 2)
            raise DataError(f"{self.registry_name}: {e}") from None

    def meta(self) -> DatasetMeta:
        return self.prepared().meta

    def load(self, split: str) -> TensorDataset:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split {split!r}")
        x, y = getattr(self.prepared(), split)
        return TensorDataset(x, y)
