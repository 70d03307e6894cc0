"""The code's shape: no import cycle, no oversized module (the seams issue's contract)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "attacks", "defenses")
MAX_LINES = 400
OVERSIZED: set[str] = set()  # modules allowed over MAX_LINES (none)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Project modules imported by ``path`` anywhere in its body (TYPE_CHECKING included)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            # the deepest project module named by the import; a package's own submodules
            # imported by its __init__ are not an edge back to the package
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_no_import_cycles():
    modules = _modules()
    graph = {n: _imports(p, n, modules) for n, p in modules.items()}
    # a package importing its own submodules (re-exports) is not a cycle with them
    for n in graph:
        graph[n] = {m for m in graph[n] if not (n in modules and modules[n].name ==
                                                  "__init__.py" and m.startswith(n + "."))}
    state: dict[str, int] = {}
    cycles = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, cycles


def test_no_module_over_the_size_limit():
    big = {str(p.relative_to(ROOT)): len(p.read_text().splitlines())
           for p in _modules().values()}
    over = {k: v for k, v in big.items() if v > MAX_LINES and k not in OVERSIZED}
    assert not over, over
