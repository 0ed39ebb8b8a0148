"""Decontamination: does training data contain the texts an evaluation reads? Pure — no I/O — so the
clean stage, the loop (its held-out prompts and human slice) and compare (its prompts against a training
run's data) all ask the same question the same way:

    report = contamination(train_rows, eval_texts_of(eval_rows), ngram=8, threshold=0.5)
    report.contaminated      # row indices; report.hits says which part matched what, and how

Every text part of a row is compared — the prompt *and* the answers (chosen, rejected, completion) —
against every text of the evaluation sets (their prompts and answers):
- `exact`: the same words after normalization (NFKC, case, whitespace and punctuation ignored) — the
  only test for texts shorter than `ngram` words, which have no n-gram to share;
- `ngram`: at least `threshold` of the part's word `ngram`-grams occur in the evaluation texts.
Parts with fewer than `min_words` words ("Yes.", "I don't know.") are not compared: they are in every data
set and say nothing about contamination.

`prompt_index(prompts)`: the index the loop and compare check held-out *prompts* with — 13-grams
(GPT-3's decontamination), because prompts written from one template ("Explain X to a friend who has
never tried it, in a short paragraph.") share their 8-grams without being copies: with 8-grams a third of
the demo's training pairs were flagged. An exact (normalized) copy is caught at any length.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from rlhf.clean.text import overlap, shingles, words

PARTS = ("prompt", "chosen", "rejected", "completion", "messages", "text")


@dataclass(frozen=True)
class Hit:
    index: int  # the row's position in the rows checked
    id: str | None  # the row's "id" when it has one
    part: str  # prompt | chosen | rejected | completion | messages | text
    match: Literal["exact", "ngram"]
    share: float  # of the part's n-grams found in the evaluation texts (1.0 for an exact match)


@dataclass
class ContaminationReport:
    rows: int
    eval_texts: int
    ngram: int
    threshold: float
    hits: list[Hit] = field(default_factory=list)

    @property
    def contaminated(self) -> list[int]:
        """Indices of the rows with at least one contaminated part."""
        return sorted({h.index for h in self.hits})

    def by_part(self) -> dict[str, int]:
        return dict(Counter(h.part for h in self.hits))

    def summary(self) -> dict:
        return {
            "rows": self.rows,
            "eval_texts": self.eval_texts,
            "rows_contaminated": len(self.contaminated),
            "hits_by_part": self.by_part(),
        }


def text_parts(row: dict | str) -> dict[str, str]:
    """A row's texts by part: its prompt, chosen, rejected, completion (strings, or message lists whose
    contents are joined), each turn of a chat row (`messages[i]`); a plain string is the part `text`."""
    if isinstance(row, str):
        return {"text": row}
    out = {}
    for col in PARTS:
        v = row.get(col)
        if isinstance(v, str):
            out[col] = v
        elif isinstance(v, list):
            texts = [m["content"] for m in v if isinstance(m, dict) and isinstance(m.get("content"), str)]
            if col == "messages":  # a chat row: each turn on its own (the prompt is one of them)
                out.update((f"messages[{i}]", t) for i, t in enumerate(texts))
            else:
                out[col] = "\n".join(texts)
    return out


def eval_texts_of(rows: Iterable[dict | str]) -> list[str]:
    """Every text part of the evaluation rows (prompts and answers), in order, without repeats."""
    return list(dict.fromkeys(t for r in rows for t in text_parts(r).values() if t.strip()))


def _key(text: str) -> str:
    return " ".join(words(text))


class EvalIndex:
    """The evaluation texts as a set of normalized texts and a set of word n-grams."""

    def __init__(self, eval_texts: Iterable[str], *, ngram: int = 8, min_words: int = 3):
        self.ngram, self.min_words = ngram, min_words
        self.exact: set[str] = set()
        self.grams: set[str] = set()
        self.size = 0
        for t in eval_texts:
            self.size += 1
            self.exact.add(_key(t))
            if len(words(t)) >= ngram:
                self.grams |= shingles(t, ngram)

    def check(self, text: str, threshold: float) -> tuple[str, float] | None:
        """("exact", 1.0) or ("ngram", share) when `text` is contaminated, else None."""
        n = len(words(text))
        if n < self.min_words:
            return None
        if _key(text) in self.exact:
            return "exact", 1.0
        if n < self.ngram:
            return None
        share = overlap(text, self.grams, self.ngram)
        return ("ngram", round(share, 3)) if share >= threshold else None


PROMPT_NGRAM = 13


def prompt_index(prompts: Iterable) -> EvalIndex:
    """The evaluation index of held-out prompts (text or chat messages), by `PROMPT_NGRAM`-grams."""
    return EvalIndex(eval_texts_of([{"prompt": p} for p in prompts]), ngram=PROMPT_NGRAM)


def contamination(
    rows: Sequence[dict | str],
    eval_texts: Iterable[str] | EvalIndex,
    *,
    ngram: int = 8,
    threshold: float = 0.5,
    min_words: int = 3,
) -> ContaminationReport:
    """Which of `rows` (row dicts of any kind, or strings) contain evaluation texts (see the module doc)."""
    index = (
        eval_texts
        if isinstance(eval_texts, EvalIndex)
        else EvalIndex(eval_texts, ngram=ngram, min_words=min_words)
    )
    report = ContaminationReport(len(rows), index.size, index.ngram, threshold)
    for i, row in enumerate(rows):
        rid = row.get("id") if isinstance(row, dict) else None
        for part, text in text_parts(row).items():
            found = index.check(text, threshold)
            if found:
                report.hits.append(Hit(i, None if rid is None else str(rid), part, *found))
    return report
