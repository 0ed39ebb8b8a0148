"""Data cleaning for `rlhf clean`: row checks and normalization, exact / MinHash / semantic de-duplication,
quality filters, PII redaction, decontamination, language, content screening, and the review project.

Pure text checks live in `text`; what a row is (SFT, prompt, preference pair) in `rows`; the steps the stage
wires in `pipeline`.
"""

from rlhf.clean import dedup, text
from rlhf.clean.embeddings import Embedder
from rlhf.clean.pipeline import (
    DecontaminationSettings,
    DedupSettings,
    Ledger,
    ReviewSettings,
    ScreeningSettings,
    decontaminate,
    deduplicate,
    screen,
    validate_and_filter,
)
from rlhf.clean.review import open_review, reviewed_rows
from rlhf.clean.rows import Kind, QualitySettings, detect_kind

__all__ = [
    "DecontaminationSettings",
    "DedupSettings",
    "Embedder",
    "Kind",
    "Ledger",
    "QualitySettings",
    "ReviewSettings",
    "ScreeningSettings",
    "decontaminate",
    "dedup",
    "deduplicate",
    "detect_kind",
    "open_review",
    "reviewed_rows",
    "screen",
    "text",
    "validate_and_filter",
]
