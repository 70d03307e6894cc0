"""Where in a plug-in its loading broke: the frame a one-line load error names.

The last frame of the traceback is usually not the plug-in's: a missing module ends in
importlib, a bad metric schema in leakbench's registration check, a failing ``np.load`` in
numpy. The line a plug-in's author needs is the last one in the plug-in's own files.
"""

from __future__ import annotations

import importlib.util
import os
import site
import sysconfig
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def plugin_frame(e: BaseException, module: str) -> traceback.FrameSummary | None:
    """Where in the plug-in ``module`` loading it broke: the last frame of ``e``'s traceback
    in the plug-in's own files (its package folder, or its module file), else the last one
    outside Python's standard library and leakbench (a missing module has none)."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.startswith("<")]
    mine = [f for f in frames if _under(f.filename, [_module_file(module)])]
    if mine:  # the module's own file first (a file in bench/archs: not bench/registry.py)
        return mine[-1]
    files = _plugin_files(module)
    own = [f for f in frames if _under(f.filename, files)]
    if own:
        return own[-1]
    paths = sysconfig.get_paths()
    here = Path(__file__).resolve().parent.parent  # leakbench's packages
    ours = [here / "bench", here / "attacks", here / "defenses"]
    installed = [paths["purelib"], paths["platlib"], *site.getsitepackages()]
    rest = [f for f in frames if not _under(f.filename, ours) and not (
        _under(f.filename, [paths["stdlib"]]) and not _under(f.filename, installed))]
    return rest[-1] if rest else None


def _module_file(module: str) -> str:
    """The file of ``module`` ("" where it has none, or cannot be found)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return ""
    return (spec.origin or "") if spec is not None else ""


def _plugin_files(module: str) -> list[str]:
    """The plug-in's own files: its top-level package's folders, or its module's file."""
    try:
        spec = importlib.util.find_spec(module.split(".")[0])
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    return list(spec.submodule_search_locations or []) or [spec.origin or ""]


def _under(name: str, roots: Iterable[Any]) -> bool:
    """Whether the file ``name`` is one of ``roots`` or lies in one of them."""
    path = str(Path(name).resolve())
    return any(r and (path == str(Path(r).resolve()) or path.startswith(
        str(Path(r).resolve()) + os.sep)) for r in roots)
