"""Python's documentation topics as a text corpus: English prose that ships with CPython."""

from __future__ import annotations

import hashlib
from typing import Any

from bench.datasets.text_common import TextDataset
from bench.registry import register_dataset
from bench.textcorpus import pydoc_sentences


@register_dataset("pydoc")
class PydocText(TextDataset):
    """Sentences of the pydoc topics (``pydoc_data.topics``, PSF licence), offline; topic =
    the help topic a sentence comes from."""

    paper = "Python Software Foundation, the Python documentation (pydoc_data.topics)"

    def corpus(self) -> tuple[tuple[str, str], ...]:
        return pydoc_sentences()

    def source(self) -> dict[str, Any]:
        """The corpus's hash: the topics ship with CPython and differ between its versions,
        so trained victims cached under one Python are not reused under another."""
        text = "\n".join(f"{topic}\t{sentence}" for topic, sentence in pydoc_sentences())
        return {"corpus_sha256": hashlib.sha256(text.encode()).hexdigest()}
