"""Import stage: existing preference data (TRL format or HH-RLHF transcripts) -> the export format.

    rlhf import --config configs/import.yaml [source=path/to/file.jsonl max_length=512 ...]

Inputs : a preference source (.jsonl/.json/.parquet, a saved dataset dir, or a hub dataset id).
Outputs: runs/<name>/preferences.jsonl and dataset/ exactly as `rlhf export` writes them, and the
         accounting (rows in = rows kept + rows rejected, each rejection with its row id and reason) in
         manifest.json and rejected.jsonl.
Validation is `rlhf.preferences.normalize_preference_row`: missing columns, empty texts, identical
chosen/rejected, malformed transcripts, bad margins, and (when `max_length` and `tokenizer` are set) rows
longer than max_length tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from rlhf.config import ConfigError, bounded, documented
from rlhf.data import source_path
from rlhf.models import load_tokenizer
from rlhf.preferences import import_preferences, save_preferences
from rlhf.runs import RunDir, RunSettings


@dataclass
class ImportStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="import"))
    source: str = documented("", help="required")
    split: str = "train"
    as_chat: bool = documented(True, help="wrap plain-string rows as user/assistant turns")
    max_length: int | None = bounded(
        None, ge=1, help="tokens (prompt + longer response), measured with `tokenizer`"
    )
    tokenizer: str | None = documented(
        None, help="model alias / dir / hub id whose tokenizer measures lengths"
    )

    def __post_init__(self):
        if not self.source:
            raise ConfigError("'source' is required: the preference file, dataset dir or hub id to import.")
        if (self.max_length is None) != (self.tokenizer is None):
            raise ConfigError(
                "set 'max_length' and 'tokenizer' together (the tokenizer measures the length)."
            )


def run(cfg: ImportStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    with RunDir.prepare(cfg.run, "import", cfg, resume=resume, overwrite=overwrite) as run_dir:
        tok = load_tokenizer(cfg.tokenizer) if cfg.tokenizer else None
        kept, acct = import_preferences(
            cfg.source,
            what="source",
            max_length=cfg.max_length,
            tokenizer=tok,
            as_chat=cfg.as_chat,
            split=cfg.split,
        )
        run_dir.record_input("source", cfg.source, source_path(cfg.source))
        outputs = save_preferences(kept, run_dir.path)
        outputs["rejected"] = run_dir.path / "rejected.jsonl"
        with open(outputs["rejected"], "w") as f:
            for r in acct.rejected:
                f.write(json.dumps(vars(r)) + "\n")
        summary = acct.summary()
        run_dir.update_manifest(accounting=summary)
        run_dir.account("import", {"source": summary})
        run_dir.finish(outputs=outputs)
        run_dir.say(f"import: {summary['rows_kept']} preference rows -> {outputs['preferences']}")
        return run_dir
