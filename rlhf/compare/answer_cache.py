"""A cache of sampled answers: an answer depends only on (model content hash, prompt, sampling settings
with the precision as resolved on this machine (not `auto`), backend, seed, sample index) — never on the
batch size or on which other answers were missing, because each answer is drawn from its own generator
seeded by (seed, prompt, sample index) (`rlhf.generation.row_seed`). So comparing checkpoints again — or
adding one, or asking for more samples per prompt — generates only what is new. bf16 and fp32 answers are
different answers (a bf16 model is a slightly different distribution), so they never share a file.

One JSON-lines file per (model, sampling settings, precision, backend, seed, format version) under
`<root>/<key>.jsonl`; each line is {prompt_key, sample, text, ids, ended, logp, ...}: `ids` are the sampled
token ids (the EOS included when the answer ended), so log-probs are scored on exactly what was sampled;
`logp` is their summed log-prob at the sampling temperature as recorded while sampling. Appends are whole
lines; a torn last line (a killed run) is ignored on reading; the last line for an answer wins.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from rlhf.generation import SamplingSettings

FORMAT = 3  # 2: sampled ids, per-answer seeds, sample index; 3: rlhf's decoder, precision, backend, logp


def prompt_key(prompt) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


class GenerationCache:
    def __init__(
        self, root: Path, model_hash: str, sampling: SamplingSettings, seed: int, backend: str = "hf"
    ):
        how = {**asdict(sampling), "precision": sampling.precision_choice().name}
        settings = json.dumps(
            {"model": model_hash, "sampling": how, "backend": backend, "seed": seed, "format": FORMAT},
            sort_keys=True,
        )
        self.path = Path(root) / f"{hashlib.sha256(settings.encode()).hexdigest()[:32]}.jsonl"
        self.entries: dict[tuple[str, int], dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").split("\n"):
                try:
                    e = json.loads(line)
                except json.JSONDecodeError:
                    continue  # an empty or torn line
                self.entries[(e["prompt_key"], e["sample"])] = e

    def get(self, prompt, sample: int = 0) -> dict | None:
        return self.entries.get((prompt_key(prompt), sample))

    def update_many(self, keys: list[tuple], fields: list[dict]) -> None:
        """Add fields (e.g. log-probs) to existing answers, keys (prompt, sample); written as whole new lines."""
        self.put_many(keys, [{**self.get(p, j), **f} for (p, j), f in zip(keys, fields, strict=True)])

    def put_many(self, keys: list[tuple], answers: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            for (p, j), a in zip(keys, answers, strict=True):
                e = {**a, "prompt_key": prompt_key(p), "sample": j}
                self.entries[(e["prompt_key"], j)] = e
                f.write(json.dumps(e, ensure_ascii=False) + "\n")
