"""The free text assessors send with a judgement (rationale, improved response, skip reason): bounded and cleaned
at the store API, whatever client sent it.

- Each field has a length limit (`TextLimits`, a setting of the `Store`; `rlhf label` reads it from `limits:`
  in configs/label.yaml). A longer text is refused with a StoreError that names the field and the limit, and
  nothing is stored.
- Characters that hide or disguise text are removed before storing: the C0 controls except tab, newline and
  carriage return (NUL, ESC, ...), DEL, the C1 controls, the bidirectional embeddings, overrides and isolates
  (U+202A-U+202E, U+2066-U+2069: "RTL override" tricks) and lone surrogates (no database stores them).
- A value that is not text is refused (never coerced with `str()`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rlhf.config import bounded
from rlhf.store.base import StoreError

UNSAFE_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
FIELD_NAMES = {"rationale": "rationale", "edit": "improved response", "skip_reason": "skip reason"}


@dataclass(frozen=True)
class TextLimits:
    """The most characters each free-text field of a judgement may hold."""

    rationale: int = bounded(10_000, ge=1, help="characters in a rationale")
    edit: int = bounded(20_000, ge=1, help="characters in an improved response (it becomes a candidate)")
    skip_reason: int = bounded(2_000, ge=1, help="characters in a skip reason")

    def clean(self, field: str, value: object) -> str:
        """`value` checked against the field's limit, with the unsafe characters removed and the ends stripped."""
        name, limit = FIELD_NAMES[field], getattr(self, field)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise StoreError(f"the {name} must be text, got {type(value).__name__}")
        if len(value) > limit:
            raise StoreError(
                f"the {name} is too long: {len(value):,} characters, the limit is {limit:,} "
                f"(setting limits.{field})"
            )
        return strip_unsafe(value).strip()

    def largest_form_bytes(self) -> int:
        """An upper bound on the bytes of one request that carries every field at its limit (JSON may spell a
        character in up to 12 bytes), plus room for the rest of the form."""
        return 12 * (self.rationale + self.edit + self.skip_reason) + 64 * 1024


def strip_unsafe(text: str) -> str:
    return UNSAFE_CHARS.sub("", text)
