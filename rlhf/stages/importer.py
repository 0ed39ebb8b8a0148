"""Import stage: existing preference data, unpaired rows or production feedback -> the export formats.

    rlhf import --config configs/import.yaml [source=path/to/file.jsonl max_length=512 ...]
    rlhf import --config configs/import.yaml kind=feedback source=logs/feedback.jsonl

Inputs : a source (.jsonl/.json/.parquet, a saved dataset dir, or a hub dataset id) of one `kind`:
         preferences  TRL rows or HH-RLHF transcripts (prompt / chosen / rejected)
         unpaired     TRL's KTO rows (prompt / completion / label), or pairs made two rows each
         feedback     production logs: a conversation (`feedback.messages`, ending with the rated assistant
                      turn) and a rating (`feedback.rating`: thumbs text, 1-5 stars or a boolean), mapped to
                      desirable / undesirable / drop by the lists `feedback.desirable`, `.undesirable`, `.drop`
Outputs: preferences: runs/<name>/preferences.jsonl and dataset/ exactly as `rlhf export` writes them;
         unpaired / feedback: runs/<name>/unpaired.jsonl (declared as `rows`) and dataset/ as `rlhf export
         format=unpaired` writes them, for `rlhf kto` (or `rlhf clean` first: PII). The accounting goes into
         manifest.json — rows in = rows kept + rows dropped by rule (feedback: dropped.jsonl) + rows
         rejected (rejected.jsonl, each with its row id and reason) — with the desirable / undesirable
         balance of unpaired rows.
Validation is `rlhf.preferences`: missing columns, empty texts, identical chosen/rejected, malformed
transcripts, bad margins or labels, unmapped or unreadable ratings, and (when `max_length` and `tokenizer`
are set) rows longer than max_length tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import source_path
from rlhf.models import load_tokenizer
from rlhf.preferences import (
    FEEDBACK_VERDICTS,
    feedback_summary,
    import_feedback,
    import_preferences,
    import_unpaired,
    rating_key,
    save_preferences,
    save_unpaired,
)
from rlhf.runs import RunDir, RunSettings
from rlhf.store import balance


@dataclass
class FeedbackSettings:
    """Which ratings make an answer desirable, undesirable, or drop the row (by rule, counted). Lists, not
    a {rating: verdict} mapping: YAML reads `true` and `1` as keys Python cannot tell apart."""

    messages: str = documented("messages", help="the column holding the conversation (the rated answer last)")
    rating: str = documented("rating", help="the column holding the rating")
    desirable: list = documented(
        default_factory=lambda: ["up", "thumbs_up", True, 5, 4], help="ratings of a desirable answer"
    )
    undesirable: list = documented(
        default_factory=lambda: ["down", "thumbs_down", False, 2, 1], help="ratings of an undesirable answer"
    )
    drop: list = documented(
        default_factory=lambda: [3], help="ratings whose rows are dropped (counted); any other is rejected"
    )

    def __post_init__(self):
        self.table: dict[str, str] = {}
        for verdict in FEEDBACK_VERDICTS:
            for value in getattr(self, verdict):
                key = rating_key(value)
                if key is None:
                    raise ConfigError(
                        f"'feedback.{verdict}': {value!r} is not a rating (text, a number or true/false)."
                    )
                if self.table.get(key, verdict) != verdict:
                    raise ConfigError(
                        f"rating {key!r} is in both 'feedback.{self.table[key]}' and 'feedback.{verdict}'."
                    )
                self.table[key] = verdict


@dataclass
class ImportStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="import"))
    source: str = documented("", help="required")
    kind: Literal["preferences", "unpaired", "feedback"] = documented(
        "preferences", help="preference pairs | unpaired (KTO) rows | production feedback with ratings"
    )
    split: str = "train"
    as_chat: bool = documented(True, help="wrap plain-string rows as user/assistant turns")
    max_length: int | None = bounded(
        None, ge=1, help="tokens (prompt + longer response), measured with `tokenizer`"
    )
    tokenizer: str | None = documented(
        None, help="model alias / dir / hub id whose tokenizer measures lengths"
    )
    feedback: FeedbackSettings = field(default_factory=FeedbackSettings)

    def __post_init__(self):
        if not self.source:
            raise ConfigError("'source' is required: the preference file, dataset dir or hub id to import.")
        if (self.max_length is None) != (self.tokenizer is None):
            raise ConfigError(
                "set 'max_length' and 'tokenizer' together (the tokenizer measures the length)."
            )


def read_rows(cfg: ImportStageConfig) -> tuple[list[dict], dict, dict[str, list]]:
    """The kept rows, the accounting summary and the rows not kept ({"rejected": [...], "dropped": [...]})."""
    tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
    common = {"what": "source", "max_length": cfg.max_length, "tokenizer": tok, "split": cfg.split}
    if cfg.kind == "feedback":
        fb = cfg.feedback
        kept, acct = import_feedback(cfg.source, fb.table, messages=fb.messages, rating=fb.rating, **common)
        summary, dropped, rejected = feedback_summary(acct)
        return kept, summary, {"rejected": rejected, "dropped": dropped}
    read = import_unpaired if cfg.kind == "unpaired" else import_preferences
    kept, acct = read(cfg.source, as_chat=cfg.as_chat, **common)
    return kept, acct.summary(), {"rejected": acct.rejected}


def run(cfg: ImportStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    with RunDir.prepare(cfg.run, "import", cfg, resume=resume, overwrite=overwrite) as run_dir:
        kept, summary, not_kept = read_rows(cfg)
        run_dir.record_input("source", cfg.source, source_path(cfg.source))
        if cfg.kind == "preferences":
            outputs = save_preferences(kept, run_dir.path)
        else:
            desirable = sum(r["label"] for r in kept)
            summary["balance"] = balance(desirable, len(kept) - desirable)
            outputs = save_unpaired(kept, run_dir.path)
        for name, rejections in not_kept.items():
            outputs[name] = write_rejections(rejections, run_dir.path / f"{name}.jsonl")
        run_dir.update_manifest(accounting=summary)
        run_dir.account("import", {"source": summary})
        run_dir.finish(outputs=outputs)
        run_dir.say(closing_line(cfg.kind, summary, outputs))
        return run_dir


def write_rejections(rejections: list, path: Path) -> Path:
    with open(path, "w") as f:
        for r in rejections:
            f.write(json.dumps(vars(r)) + "\n")
    return path


def closing_line(kind: str, summary: dict, outputs: dict) -> str:
    if kind == "preferences":
        return f"import: {summary['rows_kept']} preference rows -> {outputs['preferences']}"
    b = summary["balance"]
    dropped = f", {summary['rows_dropped_by_rule']} dropped by rule" if kind == "feedback" else ""
    return (
        f"import: {summary['rows_in']} rows in, {summary['rows_kept']} kept ({b['desirable']} desirable, "
        f"{b['undesirable']} undesirable){dropped}, {summary['rows_rejected']} rejected -> {outputs['rows']}"
    )
