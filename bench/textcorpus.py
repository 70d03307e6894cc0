"""Text corpora and their tokenizer: sentences from prose, a word-level tokenizer trained on
them locally, cached by its settings.

- :func:`pydoc_sentences`: the prose of Python's own documentation topics
  (``pydoc_data.topics``, shipped with CPython under the PSF licence: the text ``help()``
  shows), split into sentences, code blocks and headings left out. It is the running
  Python's copy, so its sentences can differ between Python versions; the tokenizer's cache
  key holds a hash of the text it was trained on.
- :func:`folder_sentences`: the sentences of a folder of ``.txt`` files, one topic per file.
- :func:`word_tokenizer`: a word-level tokenizer (Hugging Face ``tokenizers``: lower-cased,
  split on whitespace and punctuation, the ``vocab_size`` most frequent words, ``[PAD]`` = 0
  and ``[UNK]`` = 1), trained on the training sentences and cached under
  ``$LEAKBENCH_CACHE/tokenizers/`` (:mod:`bench.cache`: locked, atomic).
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import re
import unicodedata
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.cache import cache_root, cached, settings_key
from bench.paths import expanded

PAD, UNK = "[PAD]", "[UNK]"
MIN_WORDS = 4  # shorter fragments (list items, labels) are not sentences
_HEADING = re.compile(r"^[*=\-~^]{3,}\s*$")
_BREAK = re.compile(r"(?<=[.!?])\s+(?=\S)")
_STARTS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ\"'(")


_OTHER_STARTS = frozenset(("Lu", "Lt", "Lo", "Ps", "Pi"))


def _starts_sentence(c: str) -> bool:
    """Whether a sentence may begin with ``c``: an ASCII capital, quote or parenthesis, or a
    non-ASCII capital, letter of an uncased script, opening bracket or opening quote (« “),
    or ¿ ¡. Not a closing quote (French puts a space before »), a dash or a symbol."""
    if c in _STARTS:
        return True
    return ord(c) > 127 and (unicodedata.category(c) in _OTHER_STARTS or c in "¿¡")


def split_sentences(paragraph: str) -> list[str]:
    """``paragraph`` cut after . ! ? and whitespace, where the next character may begin a
    sentence (:func:`_starts_sentence`)."""
    out, start = [], 0
    for m in _BREAK.finditer(paragraph):
        if _starts_sentence(paragraph[m.end()]):
            out.append(paragraph[start:m.start()])
            start = m.end()
    return out + [paragraph[start:]]


def prose_sentences(text: str) -> list[str]:
    """Sentences of reStructuredText-like prose: indented blocks (code, grammar) and headings
    dropped, paragraphs joined, split after . ! ? before a capital (of any script) or a
    quote (:func:`split_sentences`)."""
    lines = text.splitlines()
    paragraphs, current = [], []
    for i, line in enumerate(lines):
        heading = i + 1 < len(lines) and _HEADING.match(lines[i + 1])
        if not line.strip() or line.startswith("   ") or _HEADING.match(line) or heading:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(line.strip())
    if current:
        paragraphs.append(" ".join(current))
    return [s.strip() for p in paragraphs for s in split_sentences(p)
            if len(s.split()) >= MIN_WORDS]


@lru_cache(maxsize=1)
def pydoc_sentences() -> tuple[tuple[str, str], ...]:
    """(topic, sentence) pairs of every pydoc topic, topics in name order."""
    from pydoc_data.topics import topics

    return tuple((name, s) for name in sorted(topics) for s in prose_sentences(topics[name]))


MAX_TEXT_FILE_BYTES = 100_000_000
"""The largest ``.txt`` file a text folder reads (an image folder caps its images alike)."""


def text_files(root: str) -> Iterator[Path]:
    """The ``.txt`` files under ``root`` (``A.TXT`` too), as the walk finds them; none under a
    hidden folder or hidden itself (``.ipynb_checkpoints/t-checkpoint.txt`` had been a topic
    of its own)."""
    top = expanded(root)
    return (f for f in top.rglob("*") if f.suffix.lower() == ".txt"
            and not any(part.startswith(".") for part in f.relative_to(top).parts))


def line_sentences(text: str) -> list[str]:
    """One sentence per line (Penn Treebank, WikiText's tokenised lines): each line of at
    least :data:`MIN_WORDS` words, stripped; :func:`prose_sentences` would join lines without
    final punctuation into one paragraph."""
    return [line.strip() for line in text.splitlines() if len(line.split()) >= MIN_WORDS]


def folder_sentences(root: str, lines: bool = False) -> tuple[tuple[str, str], ...]:
    """(topic, sentence) pairs of every ``*.txt`` under ``root``, files in path order; the
    topic is the file's path under ``root`` without ``.txt`` (``a/t`` and ``b/t`` are two
    topics, not one ``t``). A byte-order mark is not text (it had become an [UNK] token).
    ``lines``: one sentence per line (:func:`line_sentences`), else prose."""
    top, files = expanded(root), sorted(text_files(root))
    for f in files:  # a FIFO blocked the read for ever (a folder or a dangling link raises)
        if f.exists() and not f.is_dir() and not f.is_file():
            raise OSError(errno.EINVAL, "not a regular file", str(f))
        if f.is_file() and f.stat().st_size > MAX_TEXT_FILE_BYTES:  # a 3 GB file: 62 s, 7 GB
            raise OSError(errno.EFBIG, f"larger than {MAX_TEXT_FILE_BYTES} bytes, more text "
                          "than a benchmark's sentences need: split it", str(f))
    return tuple((f.relative_to(top).with_suffix("").as_posix(), s) for f in files
                 for s in (line_sentences if lines else prose_sentences)(_utf8_text(f)))


def _utf8_text(path: Path) -> str:
    """The file's text. A byte that is not UTF-8 is refused, naming the file: replaced, it
    had entered the vocabulary and the private sentences as U+FFFD in silence."""
    data = path.read_bytes()
    mark = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[mark:].decode("utf-8")
    except UnicodeDecodeError as e:
        raise OSError(errno.EILSEQ, f"not UTF-8 text (byte {mark + e.start}): the text "
                      "folder's files are UTF-8", str(path)) from None


def tokenizer_cache() -> Path:
    return cache_root() / "tokenizers"


def word_tokenizer(sentences: tuple[str, ...], vocab_size: int) -> Any:
    """A word-level ``tokenizers.Tokenizer`` with ``vocab_size`` tokens (specials included),
    trained on ``sentences``, from the cache when it holds one for the same settings."""
    digest = hashlib.sha256("\n".join(sentences).encode()).hexdigest()
    key = settings_key({"kind": "word-level", "lowercase": True, "vocab_size": vocab_size,
                        "specials": [PAD, UNK], "corpus_sha256": digest, "version": 2})
    return _load_or_train(str(tokenizer_cache() / f"{key}.json"), sentences, vocab_size)


@lru_cache(maxsize=16)
def _load_or_train(path: str, sentences: tuple[str, ...], vocab_size: int) -> Any:
    from tokenizers import Tokenizer

    def build() -> bytes:
        return _train(sentences, vocab_size).to_str().encode()

    def load(p: Path) -> Any:
        try:
            return Tokenizer.from_file(str(p))
        except Exception:
            return None

    return cached(Path(path), build, load)


def _train(sentences: tuple[str, ...], vocab_size: int) -> Any:
    """Train the vocabulary, then return a tokenizer of it without added tokens: a trainer's
    special tokens are matched in the raw text, so a sentence that wrote "[PAD]" (a tokenizer
    tutorial) had encoded as padding, an empty original scored a perfect token accuracy; it
    now reads as the words "[", "pad", "]". U+001F, whitespace to ``str.split`` (the
    metrics' tokens) and no whitespace to the pre-tokenizer, is a space."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

    def configured(model: Any) -> Any:
        tok = Tokenizer(model)
        tok.normalizer = normalizers.Sequence([normalizers.Replace(Regex("\x1f"), " "),
                                               normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        return tok

    trained = configured(models.WordLevel(unk_token=UNK))
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK])
    trained.train_from_iterator(sentences, trainer)
    return configured(models.WordLevel(vocab=trained.get_vocab(), unk_token=UNK))
