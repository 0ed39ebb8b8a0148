"""What `rlhf clean` sees of a row: its kind (SFT rows, prompts, preference pairs), its validated form, the
text its checks read, and the quality filters (each with a settings key and a counted reason).

Kinds are detected from the columns (`auto`): chosen/rejected -> preferences (TRL or HH-RLHF); messages or
prompt+completion -> sft; prompt alone -> prompts. A row is validated with the same normalizer the
stages use, so `rlhf clean` rejects exactly what training would reject, with the same reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rlhf.clean.languages import check_languages
from rlhf.clean.text import junk_ratio, redact_pii, repetition
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
    """The row's texts by column (each must pass the minimum-length filters on its own)."""
    cols = {"preferences": ("prompt", "chosen", "rejected"), "sft": ("prompt", "completion")}.get(
        kind, ("prompt",)
    )
    return {c: _text(row[c]) for c in cols}


def prompt_of(row: dict) -> str:
    return _text(row["prompt"])


def map_text(row: dict, fn) -> dict:
    """The row with `fn` applied to every text (strings and message contents), other fields as they were."""

    def one(v):
        if isinstance(v, str):
            return fn(v)
        if isinstance(v, list):
            return [
                {**m, "content": fn(m["content"])} if isinstance(m, dict) and "content" in m else m for m in v
            ]
        return v

    return {
        k: one(v) if k in ("prompt", "chosen", "rejected", "completion", "messages") else v
        for k, v in row.items()
    }


@dataclass
class QualitySettings:
    min_chars: int = bounded(2, ge=0)
    max_chars: int | None = bounded(50_000, ge=1)
    min_words: int = bounded(1, ge=0)
    max_dup_line_frac: float | None = bounded(0.3, ge=0, le=1, help="Gopher: share of duplicated lines")
    max_top_2gram_frac: float | None = bounded(
        0.2, ge=0, le=1, help="... characters in the most frequent 2-gram"
    )
    max_dup_5_10gram_frac: float | None = bounded(
        0.3, ge=0, le=1, help="... characters in repeated 5..10-grams"
    )
    repetition_min_words: int = bounded(
        50, ge=0, help="the repetition ratios apply to texts this long (Gopher)"
    )
    max_junk_ratio: float | None = bounded(0.3, ge=0, le=1, help="characters that are not text")
    languages: list[str] | None = documented(None, help="e.g. [english, german]; null: any language")
    pii: Literal["off", "redact", "drop"] = "redact"

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
        rep = repetition(part) if n_words >= q.repetition_min_words else {}
        for key, measure in (
            ("max_dup_line_frac", "dup_line_frac"),
            ("max_top_2gram_frac", "top_2gram_char_frac"),
            ("max_dup_5_10gram_frac", "dup_5_10gram_char_frac"),
        ):
            limit = getattr(q, key)
            if limit is not None and rep and rep[measure] > limit:
                return f"repetitive: '{column}' {measure} {rep[measure]:.2f} > quality.{key} {limit}"
        junk = junk_ratio(part)
        if q.max_junk_ratio is not None and junk > q.max_junk_ratio:
            return f"junk: {junk:.2f} of '{column}' is not text > quality.max_junk_ratio {q.max_junk_ratio}"
    return None


def pii_step(row: dict, kind: str, mode: str) -> tuple[dict | None, dict]:
    """(row with PII redacted — or None when mode is drop and there was PII —, counts by kind)."""
    counts: dict = {}

    def redact(t: str) -> str:
        out, c = redact_pii(t)
        for k, v in c.items():
            counts[k] = counts.get(k, 0) + v
        return out

    redacted = map_text(row, redact)
    if not counts or mode == "off":
        return row, counts
    return (None if mode == "drop" else redacted), counts
