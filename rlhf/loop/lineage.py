"""Lineage: which labels made which reward model, which policy, which comparison — from the manifests alone.

Every run records its inputs with content hashes and declares its outputs with content hashes. An input
whose hash equals some run's declared output came from that run; following inputs back gives the tree.
`rlhf lineage RUN [--root runs]` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.errors import RunDirError
from rlhf.runs import MANIFEST


def index_outputs(root: Path) -> dict[str, tuple[Path, str]]:
    """{sha256 of a declared output: (run dir, output name)} over every run under `root`."""
    out: dict[str, tuple[Path, str]] = {}
    for manifest in sorted(Path(root).glob(f"**/{MANIFEST}")):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        for name, entry in (m.get("outputs") or {}).items():
            if entry.get("sha256"):
                out.setdefault(entry["sha256"], (manifest.parent, name))
    return out


def index_projects(root: Path) -> dict[str, Path]:
    """{labeling project: the generate run whose candidates it holds} — from generate runs that published
    themselves and from loops (which publish a selection of a generate run's candidates)."""
    out: dict[str, Path] = {}
    for manifest in sorted(Path(root).glob(f"**/{MANIFEST}")):
        try:
            m = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if m.get("stage") == "generate" and m.get("project"):
            out.setdefault(m["project"], manifest.parent)
        for project, run in (m.get("published") or {}).items():
            out[project] = Path(run)
    return out


def tree(run: Path, index: dict, _seen: frozenset = frozenset(), projects: dict | None = None) -> dict:
    m = json.loads((run / MANIFEST).read_text())
    node = {"run": str(run), "stage": m.get("stage"), "status": m.get("status"), "inputs": []}
    origin_run = (projects or {}).get(m.get("project") or "") if m.get("stage") == "export" else None
    if origin_run is not None and (origin_run / MANIFEST).is_file() and origin_run not in _seen:
        node["inputs"].append(
            {
                "key": f"project {m['project']}",
                "output": "labels on the candidates",
                "from": tree(origin_run, index, _seen | {run}, projects),
                "sha256": None,
            }
        )
    for key, entry in (m.get("inputs") or {}).items():
        child = {"key": key, "source": entry.get("source"), "sha256": entry.get("sha256")}
        origin = index.get(entry.get("sha256") or "")
        if origin is not None and origin[0] != run and origin[0] not in _seen:
            child["output"] = origin[1]
            child["from"] = tree(origin[0], index, _seen | {run}, projects)
        node["inputs"].append(child)
    return node


def render(node: dict, indent: str = "") -> list[str]:
    """The inputs of `node`, one line each, their own inputs indented below them."""
    lines: list[str] = []
    for k, child in enumerate(node["inputs"]):
        last = k == len(node["inputs"]) - 1
        branch, pad = ("└─ ", "   ") if last else ("├─ ", "│  ")
        short = (child.get("sha256") or "")[:12] or (
            "judgements in the labeling store"
            if child["key"].startswith("project ")
            else "no hash (hub id or function)"
        )
        if "from" in child:
            src = child["from"]
            lines.append(
                f"{indent}{branch}{child['key']} = {child['output']} of {src['stage']} {src['run']} ({src['status']}) [{short}]"
            )
            lines += render(src, indent + pad)
        else:
            lines.append(f"{indent}{branch}{child['key']}: {child['source']} [{short}]")
    return lines


def lineage_text(run: Path, root: Path) -> str:
    """The tree of `run`; for a loop directory, the tree of each round's comparison."""
    manifest = run / MANIFEST
    if not manifest.is_file():
        raise RunDirError(
            f"'{run}' is not a run directory (no {MANIFEST}); pass runs/<name> of a stage or loop."
        )
    m = json.loads(manifest.read_text())
    index, projects = index_outputs(root), index_projects(root)
    targets = [run]
    if m.get("stage") == "loop":
        index, projects = index_outputs(run), index_projects(run)
        targets = [Path(v["run"]) for k, v in (m.get("steps") or {}).items() if k.endswith("-compare")]
        if not targets:
            return f"loop {run}: no round has reached its comparison yet"
    blocks = []
    for target in targets:
        node = tree(target, index, projects=projects)
        blocks.append("\n".join([f"{node['stage']}  {node['run']}  ({node['status']})", *render(node)]))
    return "\n\n".join(blocks)
