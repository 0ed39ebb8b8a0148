"""Data cleaning for `rlhf clean`: row checks and normalization, pair-aware exact / MinHash / semantic
de-duplication, quality filters (datatrove's Gopher repetition filter), PII (Presidio), decontamination,
language, side-aware content screening, and the review project.

Pure text checks live in `text`; personal data in `pii`; what a row is (SFT, prompt, preference pair) in
`rows`; decontamination, as a pure API the loop and compare can call too, in `decontamination`; the steps
the stage wires in `pipeline`.
"""

from rlhf.clean import dedup, pii, text
from rlhf.clean.decontamination import (
    ContaminationReport,
    EvalIndex,
    Hit,
    contamination,
    eval_texts_of,
    prompt_index,
)
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
from rlhf.clean.rows import Kind, QualitySettings, RepetitionSettings, detect_kind
from rlhf.clean.trained_on import training_overlap

__all__ = [
    "ContaminationReport",
    "DecontaminationSettings",
    "DedupSettings",
    "Embedder",
    "EvalIndex",
    "Hit",
    "Kind",
    "Ledger",
    "QualitySettings",
    "RepetitionSettings",
    "ReviewSettings",
    "ScreeningSettings",
    "contamination",
    "decontaminate",
    "dedup",
    "deduplicate",
    "detect_kind",
    "eval_texts_of",
    "prompt_index",
    "open_review",
    "pii",
    "reviewed_rows",
    "screen",
    "text",
    "training_overlap",
    "validate_and_filter",
]
