"""What `rlhf clean` sees of a row: its kind (SFT rows, prompts, preference pairs), its validated form, the
text its checks read, and the quality filters (each with a settings key and a counted reason).

Kinds are detected from the columns (`auto`): chosen/rejected -> preferences (TRL or HH-RLHF); messages or
prompt+completion -> sft; prompt alone -> prompts. A row is validated with the same normalizer the
stages use, so `rlhf clean` rejects exactly what training would reject, with the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from datatrove.data import Document
from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter

from rlhf.clean.languages import check_languages
from rlhf.clean.pii import Finding, redact_pii
from rlhf.clean.text import junk_ratio
from rlhf.config import bounded, documented
from rlhf.data import normalize_sft_row
from rlhf.preferences import normalize_preference_row
from rlhf.prompts import normalize_prompt

Kind = Literal["auto", "sft", "prompts", "preferences"]


def detect_kind(rows: list[dict]) -> str:
    cols = {k for r in rows[:200] for k in r}
    if {"chosen", "rejected"} <= cols:
        return "preferences"
    if "messages" in cols or "completion" in cols:
        return "sft"
    return "prompts"


def validate(row: dict, kind: str) -> tuple[dict | None, str | None]:
    if kind == "preferences":
        return normalize_preference_row(row, as_chat=False)
    if kind == "sft":
        return normalize_sft_row(row, as_chat=False)
    return normalize_prompt(row)


def _text(value) -> str:
    if isinstance(value, str):
        return value
    return "\n".join(m["content"] for m in value)


def text_of(row: dict, kind: str) -> str:
    """The row's whole text, as the checks read it."""
    if kind == "preferences":
        return "\n".join((_text(row["prompt"]), _text(row["chosen"]), _text(row["rejected"])))
    if kind == "sft":
        return "\n".join((_text(row["prompt"]), _text(row["completion"])))
    return _text(row["prompt"])


def parts_of(row: dict, kind: str) -> dict[str, str]:
    """The row's texts by column: prompt / chosen / rejected for a preference pair, prompt / completion for
    an SFT row, the prompt alone for a prompt row. Quality filters measure each on its own; de-duplication,
    decontamination and screening compare them part by part."""
    cols = {"preferences": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}.get(
        kind, ("prompt",)
    )
    return {c: _text(row[c]) for c in cols}


def prompt_of(row: dict) -> str:
    return _text(row["prompt"])


TEXT_COLUMNS = ("prompt", "chosen", "rejected", "completion", "messages")


def map_text(row: dict, fn) -> dict:
    """The row with `fn(text, where)` applied to every text (strings and message contents; `where` names
    it: "prompt", "chosen[2]" for message 2 of a conversation), other fields as they were."""

    def one(v, col):
        if isinstance(v, str):
            return fn(v, col)
        if isinstance(v, list):
            return [
                {**m, "content": fn(m["content"], f"{col}[{i}]")}
                if isinstance(m, dict) and isinstance(m.get("content"), str)
                else m
                for i, m in enumerate(v)
            ]
        return v

    return {k: one(v, k) if k in TEXT_COLUMNS else v for k, v in row.items()}


@dataclass
class RepetitionSettings:
    """Gopher's repetition filter (Rae et al. 2021, table A1), run in-process by datatrove's
    `GopherRepetitionFilter`: each threshold is a share of the text's characters; null switches one off."""

    enabled: bool = True
    min_words: int = bounded(50, ge=0, help="texts (each part of a row) at least this long are checked")
    dup_line_frac: float | None = bounded(0.3, ge=0, le=1, help="share of lines that repeat an earlier one")
    dup_para_frac: float | None = bounded(0.3, ge=0, le=1, help="share of paragraphs that repeat")
    dup_line_char_frac: float | None = bounded(0.2, ge=0, le=1, help="characters in repeated lines")
    dup_para_char_frac: float | None = bounded(0.2, ge=0, le=1, help="characters in repeated paragraphs")
    top_ngram_frac: list[float] = bounded(
        default_factory=lambda: [0.2, 0.18, 0.16],
        ge=0,
        le=1,
        help="characters in the most frequent n-gram, for n = 2, 3, 4, ...",
    )
    dup_ngram_frac: list[float] = bounded(
        default_factory=lambda: [0.15, 0.14, 0.13, 0.12, 0.11, 0.10],
        ge=0,
        le=1,
        help="characters in repeated n-grams, for n = 5, 6, ..., 10",
    )

    def filter(self) -> GopherRepetitionFilter:
        return _gopher(
            self.dup_line_frac,
            self.dup_para_frac,
            self.dup_line_char_frac,
            self.dup_para_char_frac,
            tuple((2 + i, f) for i, f in enumerate(self.top_ngram_frac)),
            tuple((5 + i, f) for i, f in enumerate(self.dup_ngram_frac)),
        )


@lru_cache(maxsize=4)
def _gopher(line, para, line_char, para_char, top, dup) -> GopherRepetitionFilter:
    return GopherRepetitionFilter(
        dup_line_frac=line,
        dup_para_frac=para,
        dup_line_char_frac=line_char,
        dup_para_char_frac=para_char,
        top_n_grams=top,
        dup_n_grams=dup,
    )


def repetition_reason(text: str, r: RepetitionSettings) -> str | None:
    """The Gopher threshold `text` exceeds (datatrove's name: dup_line_frac, top_2_gram,
    duplicated_7_n_grams, ...), or None."""
    if not r.enabled or len(text.split()) < r.min_words:
        return None
    verdict = r.filter().filter(Document(text=text, id=""))
    return None if verdict is True else verdict[1]


@dataclass
class QualitySettings:
    min_chars: int = bounded(2, ge=0)
    max_chars: int | None = bounded(50_000, ge=1)
    min_words: int = bounded(1, ge=0)
    repetition: RepetitionSettings = field(default_factory=RepetitionSettings)
    max_junk_ratio: float | None = bounded(0.3, ge=0, le=1, help="characters that are not text")
    languages: list[str] | None = documented(None, help="e.g. [english, german]; null: any language")
    pii: Literal["off", "redact", "drop", "review"] = documented(
        "redact", help="personal data: leave | replace by [EMAIL] ... | drop the row | send it to review"
    )

    def __post_init__(self):
        if self.languages:
            check_languages(self.languages)


def quality_reason(text: str, q: QualitySettings, parts: dict[str, str] | None = None) -> str | None:
    """The first quality filter the row fails, as "kind: detail", or None. Length, repetition and junk are
    measured on each of `parts` on its own (a preference pair's two answers naturally share phrases; a
    one-letter answer is too short even under a long prompt); the maximum length on the whole text."""
    if q.max_chars is not None and len(text) > q.max_chars:
        return f"too long: {len(text)} characters > quality.max_chars {q.max_chars}"
    for column, part in (parts or {"text": text}).items():
        n_words = len(part.split())
        if len(part.strip()) < q.min_chars or n_words < q.min_words:
            return f"too short: '{column}' has {len(part.strip())} characters, {n_words} words"
        failed = repetition_reason(part, q.repetition)
        if failed:
            return f"repetitive: '{column}' exceeds Gopher's {failed} threshold (quality.repetition)"
        junk = junk_ratio(part)
        if q.max_junk_ratio is not None and junk > q.max_junk_ratio:
            return f"junk: {junk:.2f} of '{column}' is not text > quality.max_junk_ratio {q.max_junk_ratio}"
    return None


def find_row_pii(row: dict) -> tuple[dict, list[dict]]:
    """(the row with personal data replaced by labels, one record per finding: column, kind, span, score)."""
    found: list[dict] = []

    def redact(t: str, where: str) -> str:
        out, findings = redact_pii(t)
        found.extend(_record(where, f) for f in findings)
        return out

    return map_text(row, redact), found


def _record(where: str, f: Finding) -> dict:
    return {"column": where, "kind": f.kind, "start": f.start, "end": f.end, "score": f.score}
