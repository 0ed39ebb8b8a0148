"""Was a checkpoint trained on the prompts it is being compared on? `training_overlap` reads each
checkpoint's run manifest for its recorded training data (`data.train`) and asks `contamination` (by
`prompt_index`: 13-grams and exact copies) whether those rows contain the prompts."""

from __future__ import annotations

import json
from pathlib import Path

from rlhf.clean.decontamination import contamination, prompt_index
from rlhf.data import load_rows
from rlhf.runs import MANIFEST


def training_overlap(specs: dict[str, str], prompts: list) -> list[str]:
    """A warning per checkpoint whose own training data (its run's recorded `data.train`) contains the
    comparison's prompts (rlhf.clean.contamination): its numbers would be measured on what it learned."""
    index = prompt_index(prompts)  # a prompt: text or messages
    out = []
    for name, spec in specs.items():
        manifest = Path(spec) / MANIFEST
        if not manifest.is_file():
            continue
        data = (json.loads(manifest.read_text()).get("inputs") or {}).get("data.train") or {}
        if not data.get("path") or not Path(data["path"]).exists():
            continue
        rows = load_rows(data["path"], what=f"training data of {name}").rows
        hit = contamination(rows, index).contaminated
        if hit:
            out.append(
                f"{len(hit)} of {len(rows)} training rows of {name} ({data['path']}) contain this comparison's "
                "prompts: its numbers are measured on what it was trained on — compare on other prompts."
            )
    return out
