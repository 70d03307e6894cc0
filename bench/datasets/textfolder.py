"""A folder of ``.txt`` files as a text corpus, for users who have real text."""

from __future__ import annotations

from functools import lru_cache

from bench.datasets.text_common import TEXT_PARAMS, TextDataset
from bench.registry import Param, register_dataset
from bench.textcorpus import folder_sentences


@lru_cache(maxsize=8)
def _sentences(root: str) -> tuple[tuple[str, str], ...]:
    return folder_sentences(root)


@register_dataset("textfolder")
class TextFolder(TextDataset):
    """Sentences of every ``*.txt`` under `root`; topic = the file's name (classify task)."""

    paper = "local text files"
    params = (Param("root", str, help="folder of .txt files, read recursively",
                    identity=False),) + TEXT_PARAMS

    def corpus(self) -> tuple[tuple[str, str], ...]:
        return _sentences(str(self.root))
