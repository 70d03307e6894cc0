"""Every module of leakbench imports as the first one a program imports.

An import cycle between modules can hide behind the order the package's own ``__init__``
happens to import them in: ``import bench.pipeline`` alone failed while ``import bench.cli``
worked. One interpreter tries every module in turn, forgetting leakbench's modules (not
torch's) between tries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "attacks", "defenses")

SCRIPT = """
import importlib, sys
roots = {roots!r}
failed = []
for name in {modules!r}:
    for loaded in [m for m in sys.modules if m.split(".")[0] in roots]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as e:
        failed.append(f"{{name}}: {{type(e).__name__}}: {{e}}")
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_first():
    names = modules()
    assert "bench.pipeline" in names and "bench.cells.trials" in names
    done = subprocess.run([sys.executable, "-c", SCRIPT.format(roots=PACKAGES, modules=names)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
