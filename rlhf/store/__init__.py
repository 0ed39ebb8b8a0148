"""The labeling store (SQLAlchemy 2; SQLite or PostgreSQL): accounts, projects, items, server-side
assignment and submits (`Store`, with `TextLimits` on free text); judgement payloads (`judgements`, pure);
export (pure: preference pairs, or unpaired KTO rows with their balance) and the quality statistics of a
project (pure); inter-annotator agreement (`agreement`, pure)."""

from rlhf.store import agreement, judgements
from rlhf.store.accounts import ROLES, check_new_password, check_username
from rlhf.store.agreement import (
    agreement_with_majority,
    gold_accuracy,
    krippendorff_alpha,
    majority,
    throughput,
)
from rlhf.store.base import StoreError, now_utc
from rlhf.store.export import ExportSettings, balance, export_project, export_rows, export_unpaired
from rlhf.store.judgements import (
    BINARY_LABELS,
    MAX_CANDIDATES,
    AnswerTask,
    JudgementError,
    PreferenceTask,
    Priority,
    Rationale,
    Task,
    preferences,
    values,
)
from rlhf.store.limits import TextLimits
from rlhf.store.quality import answer, gold_failures, gold_over_time, project_stats, top_choice
from rlhf.store.service import Store

__all__ = [
    "BINARY_LABELS",
    "MAX_CANDIDATES",
    "ROLES",
    "AnswerTask",
    "ExportSettings",
    "JudgementError",
    "PreferenceTask",
    "Priority",
    "Rationale",
    "Store",
    "StoreError",
    "Task",
    "TextLimits",
    "agreement",
    "agreement_with_majority",
    "answer",
    "balance",
    "check_new_password",
    "check_username",
    "export_project",
    "export_rows",
    "export_unpaired",
    "gold_accuracy",
    "gold_failures",
    "gold_over_time",
    "judgements",
    "krippendorff_alpha",
    "majority",
    "now_utc",
    "preferences",
    "project_stats",
    "throughput",
    "top_choice",
    "values",
]
