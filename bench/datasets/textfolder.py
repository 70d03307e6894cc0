"""A folder of ``.txt`` files as a text corpus, for users who have real text."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from bench.datasets.text_common import TEXT_PARAMS, TextDataset
from bench.datasets.torchvision_common import DatasetNotFoundError, data_root, folder_source
from bench.registry import Param, register_dataset
from bench.textcorpus import MIN_WORDS, folder_sentences, text_files


@lru_cache(maxsize=8)
def _sentences(folder: str, lines: bool) -> tuple[tuple[str, str], ...]:
    path = Path(folder)
    if not path.is_dir() or next(text_files(folder), None) is None:
        raise DatasetNotFoundError(f"textfolder: {path} is not a folder holding .txt files")
    try:
        sentences = folder_sentences(folder, lines)
    except OSError as e:  # a folder named *.txt, a FIFO, a file too large or unreadable
        where = e.filename or path
        raise DatasetNotFoundError(f"textfolder: {where}: {e.strerror or e}") from e
    if not sentences:
        raise DatasetNotFoundError(f"textfolder: the .txt files under {path} hold no sentence "
                                   f"of at least {MIN_WORDS} words" + ("" if lines else
                                   " (one sentence per line, without final stops? set "
                                   "`lines: true`)"))
    return sentences


@register_dataset("textfolder")
class TextFolder(TextDataset):
    """Sentences of every ``*.txt`` under `root`; topic = the file's path under it, without
    ``.txt`` (classify task)."""

    paper = "local text files"
    params = (Param("root", str, None, nullable=True, identity=False, path=True,
                    help="folder of .txt files, read recursively (default: $LEAKBENCH_DATA/text)"),
              Param("lines", bool, False, identity="non-default",
                    help="one sentence per line (Penn Treebank, WikiText); default: prose, "
                         "lines joined into paragraphs and split after . ! ?"),
              ) + TEXT_PARAMS

    def corpus(self) -> tuple[tuple[str, str], ...]:
        return _sentences(str(data_root(self.root, "textfolder", "text")), self.lines)

    def source(self) -> dict[str, Any]:
        return folder_source(data_root(self.root, "textfolder", "text"))
