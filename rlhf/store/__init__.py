"""The labeling store (SQLAlchemy 2; SQLite or PostgreSQL): accounts, projects, items, server-side
assignment and submits (`Store`, with `TextLimits` on free text); judgement payloads (`judgements`, pure);
preference export and the quality statistics of a project (pure); inter-annotator agreement (`agreement`,
pure)."""

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
from rlhf.store.export import ExportSettings, export_project, export_rows
from rlhf.store.judgements import (
    MAX_CANDIDATES,
    JudgementError,
    PreferenceTask,
    Priority,
    Rationale,
    Task,
    preferences,
    values,
)
from rlhf.store.limits import TextLimits
from rlhf.store.quality import gold_failures, gold_over_time, project_stats, top_choice
from rlhf.store.service import Store

__all__ = [
    "MAX_CANDIDATES",
    "ROLES",
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
    "check_new_password",
    "check_username",
    "export_project",
    "export_rows",
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
