"""A cache of sampled answers keyed by (model content hash, prompt, sampling settings, seed), so comparing
checkpoints again — or adding one — generates only what is new.

One JSON-lines file per (model, sampling, seed) under `<root>/<key>.jsonl`; each line is {prompt_key,
text, ended, tokens}. Appends are whole lines; a torn last line (a killed run) is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from rlhf.generation import SamplingSettings


def prompt_key(prompt) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


class GenerationCache:
    def __init__(self, root: Path, model_hash: str, sampling: SamplingSettings, seed: int):
        settings = json.dumps(
            {"model": model_hash, "sampling": asdict(sampling), "seed": seed}, sort_keys=True
        )
        self.path = Path(root) / f"{hashlib.sha256(settings.encode()).hexdigest()[:32]}.jsonl"
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").split("\n"):
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # an empty or torn line
                self.entries[e["prompt_key"]] = e

    def get(self, prompt) -> dict | None:
        return self.entries.get(prompt_key(prompt))

    def update_many(self, prompts: list, fields: list[dict]) -> None:
        """Add fields (e.g. log-probs) to existing entries; written as whole new lines (the last one wins)."""
        self.put_many(prompts, [{**self.get(p), **f} for p, f in zip(prompts, fields, strict=True)])

    def put_many(self, prompts: list, answers: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for p, a in zip(prompts, answers, strict=True):
                e = {**a, "prompt_key": prompt_key(p)}
                self.entries[e["prompt_key"]] = e
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
