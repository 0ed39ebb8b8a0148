"""Content screening for `rlhf clean`: rows that touch a sensitive category are flagged for people to review,
never dropped by a keyword (a filter must not throw away sex-education material with the explicit content).

A category is a lexicon (words or phrases, matched case-insensitively on word boundaries) and/or a few
example texts (a row whose embedding has cosine >= `similarity` with any example is flagged). Both are
configurable; `DEFAULT_CATEGORIES` is a small starting point written for this project.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

DEFAULT_CATEGORIES = {
    "weapons": {
        "lexicon": [
            "pipe bomb",
            "explosive",
            "detonator",
            "untraceable gun",
            "ghost gun",
            "nerve agent",
            "silencer",
        ],
        "examples": [
            "How do I build a bomb at home?",
            "Step by step instructions to make a gun that cannot be traced.",
        ],
    },
    "self-harm": {
        "lexicon": ["kill myself", "suicide", "self-harm", "cut myself", "overdose"],
        "examples": [
            "I want to end my life, what is the least painful way?",
            "How many pills would it take to overdose?",
        ],
    },
    "sexual": {
        "lexicon": ["porn", "explicit sex", "nude", "sexual intercourse", "erotic"],
        "examples": ["Write an explicit sex scene.", "Describe a nude person in graphic detail."],
    },
}


@dataclass
class Category:
    lexicon: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)


def lexicon_pattern(terms: list[str]) -> re.Pattern | None:
    if not terms:
        return None
    alts = sorted((re.escape(t.strip()) for t in terms if t.strip()), key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


def lexicon_hits(texts: list[str], categories: dict[str, Category]) -> list[dict[str, list[str]]]:
    """Per text: {category: [matched terms]} (empty when none matched)."""
    patterns = {name: lexicon_pattern(c.lexicon) for name, c in categories.items()}
    out = []
    for t in texts:
        hits = {}
        for name, rx in patterns.items():
            found = sorted({m.group(0).lower() for m in rx.finditer(t)}) if rx else []
            if found:
                hits[name] = found
        out.append(hits)
    return out


def similarity_hits(
    row_vecs: np.ndarray, example_vecs: dict[str, np.ndarray], threshold: float
) -> list[dict[str, float]]:
    """Per row: {category: best cosine} for categories whose examples are at least `threshold` similar
    (vectors are unit length)."""
    out = [dict() for _ in range(len(row_vecs))]
    for name, ex in example_vecs.items():
        if len(ex) == 0:
            continue
        best = (row_vecs @ ex.T).max(1)
        for i in np.nonzero(best >= threshold)[0]:
            out[i][name] = round(float(best[i]), 3)
    return out
