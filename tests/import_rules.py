"""The import rule, checked on source trees with `ast` (no imports executed):

1. library modules (rlhf/*.py, rlhf/store/, labeling_ui/) never import rlhf.stages or rlhf.loop;
2. a stage (rlhf/stages/X.py) never imports another stage, nor the loop;
   the loop (rlhf/loop/) is the one layer above the stages: it may import them;
3. imports sit at module top; one inside a function must say why on its line (`# lazy: ...`);
4. no import cycle among the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("rlhf", "labeling_ui")


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(node: ast.AST, package: str, known: set[str]) -> list[str]:
    """The project modules an Import / ImportFrom statement names (a `from pkg import mod` counts as the
    module when pkg.mod is one)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            base = ".".join(
                package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
            )
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return [n for n in names if n.split(".")[0] in PACKAGES and n in known]


def check_tree(root: Path) -> list[str]:
    """All violations of the rule under `root` (which holds the rlhf/ and labeling_ui/ packages)."""
    files = {module_name(root, p): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        stage = mod.startswith("rlhf.stages.")
        loop = mod == "rlhf.loop" or mod.startswith("rlhf.loop.")
        nested = {
            id(n)
            for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)
            for n in ast.walk(f)
            if isinstance(n, ast.Import | ast.ImportFrom)
        }
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            if id(node) in nested and "# lazy:" not in lines[node.lineno - 1]:
                problems.append(f"{where}: import inside a function without a '# lazy: <why>' comment")
            for target in imported_modules(node, package, known):
                graph[mod].add(target)
                if (target == "rlhf.loop" or target.startswith("rlhf.loop.")) and not loop:
                    problems.append(f"{where}: {mod} imports the loop layer {target}")
                if (target.startswith("rlhf.stages.") or target == "rlhf.stages") and not loop:
                    if not stage:
                        problems.append(f"{where}: library module {mod} imports the stage {target}")
                    elif target != mod:
                        problems.append(f"{where}: stage {mod} imports another stage, {target}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One example cycle per strongly connected component with more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found
