"""The import graph of the project's own modules: cycles, and each module's size.

    python tools/import_graph.py            # cycles (exit status 1 when there is one), sizes
    python tools/import_graph.py --edges    # also every module's imports of the project

Counts every import of ``ewc_dqn`` and ``envs`` modules: at the top of a module, inside a
function or under ``if TYPE_CHECKING:`` (a cycle of type names is a cycle for a reader too).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ewc_dqn", "envs")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The project modules ``path`` imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in modules:
                found.add(name)
    found.discard(module_name(path))
    return found


def graph() -> tuple[dict[str, set[str]], dict[str, int]]:
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    modules = {module_name(p) for p in files}
    edges = {module_name(p): imports_of(p, modules) for p in files}
    sizes = {module_name(p): len(p.read_text().splitlines()) for p in files}
    return edges, sizes


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every module's imports")
    parser.add_argument("--max-lines", type=int, default=400, help="list modules longer than this")
    args = parser.parse_args()
    edges, sizes = graph()
    if args.edges:
        for v in sorted(edges):
            print(f"{v}: {', '.join(sorted(edges[v])) or '-'}")
    found = cycles(edges)
    for c in found:
        print("cycle: " + " <-> ".join(c))
    long = sorted((n, m) for m, n in sizes.items() if n > args.max_lines)
    for n, m in reversed(long):
        print(f"{n:5d} lines  {m}")
    print(f"{len(edges)} modules, {len(found)} cycles")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
