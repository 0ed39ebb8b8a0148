"""Row builders shared by the tests: chat SFT rows, preference rows with a planted preference, JSONL files,
and the XSS payload the browser tests render."""

from __future__ import annotations

import json
import random

from support.tiny import WORDS


def make_rows(n: int, *, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        q = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        a = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        rows.append(
            {"id": f"r{i}", "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
    return rows


def write_jsonl(path, rows) -> str:
    with open(path, "w") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return str(path)


FILLER = [w for w in WORDS if w != "marker"]


def marker_rows(n, seed=0, *, long_prompt_every=0, margin=False):
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = lambda k: " ".join(rng.choice(FILLER) for _ in range(k))  # noqa: E731
        prompt = words(rng.randint(2, 5))
        if long_prompt_every and i % long_prompt_every == 0:
            prompt = words(120)
        good, bad = words(rng.randint(3, 6)), words(rng.randint(3, 6))
        row = {
            "id": f"r{i}",
            "prompt": prompt,
            "chosen": f"{good} marker",
            "rejected": bad,
            "assessor": "ann" if i % 2 else "bob",
            "slice": "long" if long_prompt_every and i % long_prompt_every == 0 else "short",
        }
        if margin:
            row["margin"] = 0.5
        rows.append(row)
    return rows


XSS = (
    '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2"> [tap](javascript:window.__xss=3)'
)
