"""The import rule, as a table of allowed package -> package edges, checked on source trees with `ast`
(no imports executed):

    plumbing  <-  store  <-  {clean, reward, compare, train}  <-  app  <-  stages  <-  loop

- plumbing: the flat modules `rlhf/*.py` (config, runs, data, models, generation, ...);
- domains don't import each other, except train -> reward (PPO scores its rollouts with a reward);
- app: `labeling_ui/` (the Gradio app over the store; the arena leaderboard from compare);
- a stage (`rlhf/stages/X.py`) never imports another stage; the loop is the only layer above the stages;
- outside a package, code imports from the package (its `__init__` names the API in `__all__`), never
  from its modules (`from rlhf.reward import RewardScorer`, not `from rlhf.reward.scorer import ...`);
- imports sit at module top; one inside a function says why on its line (`# lazy: ...`);
- no import cycle among the project's modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOTS = ("rlhf", "labeling_ui")
DOMAINS = ("store", "clean", "reward", "compare", "train", "stages", "loop")
# importer -> the packages it may import (its own included)
ALLOWED: dict[str, set[str]] = {
    "plumbing": {"plumbing"},
    "store": {"plumbing", "store"},
    "clean": {"plumbing", "store", "clean"},
    "reward": {"plumbing", "store", "reward"},
    "compare": {"plumbing", "store", "compare"},
    "train": {"plumbing", "store", "train", "reward"},  # documented exception: PPO scores its rollouts
    "app": {"plumbing", "store", "compare", "app"},
    "stages": {"plumbing", "store", "clean", "reward", "compare", "train", "app", "stages"},
    "loop": {"plumbing", "store", "clean", "reward", "compare", "train", "app", "stages", "loop"},
}


def package_of(module: str) -> str:
    """The rule's package for a module name: plumbing, a domain, app, stages or loop."""
    parts = module.split(".")
    if parts[0] == "labeling_ui":
        return "app"
    if len(parts) > 1 and parts[1] in DOMAINS:
        return parts[1]
    return "plumbing"


def public_package(module: str) -> str | None:
    """The package whose API a module belongs to (`rlhf.train.ppo.trainer` -> `rlhf.train.ppo`), for the
    domain packages; None for plumbing, stages, the loop and the app."""
    parts = module.split(".")
    if parts[0] != "rlhf" or len(parts) < 2 or parts[1] not in DOMAINS or parts[1] in ("stages", "loop"):
        return None
    return ".".join(parts[:3]) if parts[1:3] == ["train", "ppo"] else ".".join(parts[:2])


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
    return [n for n in names if n.split(".")[0] in ROOTS and n in known]


def edge_problem(mod: str, target: str, via: str = "") -> str | None:
    """Why `mod` may not import `target` (named in `from <via> import ...`), or None when the rule allows it."""
    src, dst = package_of(mod), package_of(target)
    if dst not in ALLOWED[src]:
        return f"{mod} ({src}) imports {target} ({dst}): {src} may import only {sorted(ALLOWED[src])}"
    if src == dst == "stages" and target != mod and target != "rlhf.stages":
        return f"stage {mod} imports another stage, {target}"
    inside = public_package(target)
    if inside and target != inside and via != inside and not (mod == inside or mod.startswith(inside + ".")):
        same_domain = package_of(mod) == package_of(target) and mod.startswith(inside.rsplit(".", 1)[0] + ".")
        if not same_domain:
            return f"{mod} imports {target}, a module inside {inside}: import from {inside} (its __all__)"
    return None


def check_tree(root: Path) -> list[str]:
    """All violations of the rule under `root` (which holds the rlhf/ and labeling_ui/ packages)."""
    files = {module_name(root, p): p for pkg in ROOTS for p in sorted((root / pkg).rglob("*.py"))}
    known = set(files)
    problems: list[str] = []
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
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
            via = node.module if isinstance(node, ast.ImportFrom) and not node.level else ""
            for target in dict.fromkeys(imported_modules(node, package, known)):
                graph[mod].add(target)
                why = edge_problem(mod, target, via or "")
                if why:
                    problems.append(f"{where}: {why}")
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
