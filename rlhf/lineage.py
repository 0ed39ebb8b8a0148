"""Lineage: which labels made which reward model, which policy, which comparison — from the manifests alone.

Every run records its inputs with content hashes and declares its outputs with content hashes. An input
whose hash equals some run's declared output came from that run; following inputs back gives the tree.
`rlhf lineage RUN [--root runs]` prints it.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def tree(run: Path, index: dict, _seen: frozenset = frozenset()) -> dict:
    m = json.loads((run / MANIFEST).read_text())
    node = {"run": str(run), "stage": m.get("stage"), "status": m.get("status"), "inputs": []}
    for key, entry in (m.get("inputs") or {}).items():
        child = {"key": key, "source": entry.get("source"), "sha256": entry.get("sha256")}
        origin = index.get(entry.get("sha256") or "")
        if origin is not None and origin[0] != run and origin[0] not in _seen:
            child["output"] = origin[1]
            child["from"] = tree(origin[0], index, _seen | {run})
        node["inputs"].append(child)
    return node


def render(node: dict, indent: str = "") -> list[str]:
    """The inputs of `node`, one line each, their own inputs indented below them."""
    lines: list[str] = []
    for k, child in enumerate(node["inputs"]):
        last = k == len(node["inputs"]) - 1
        branch, pad = ("└─ ", "   ") if last else ("├─ ", "│  ")
        short = (child.get("sha256") or "")[:12] or "no hash (hub id or function)"
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
    node = tree(run, index_outputs(root))
    return "\n".join([f"{node['stage']}  {node['run']}  ({node['status']})", *render(node)])
