"""Export stage: a labeling project's judgements -> a preference dataset for reward/DPO training.

    rlhf export --config configs/export.yaml [project=... aggregate=per_vote margin=true ...]

Inputs : the store (SQLite file or PostgreSQL URL) and a project name.
Outputs: runs/<name>/preferences.jsonl and runs/<name>/dataset/ (datasets.save_to_disk) in TRL's preference
         format — conversational when any prompt is a message list — declared as the run's `preferences`
         and `dataset` outputs, plus the accounting in manifest.json (items in = items exported + items
         dropped, by reason; pairs dropped by reason). Optional push_to_hub: <repo id>.

Choices: pairs come from `rlhf.store.export` (pure). Assessors whose gold accuracy is below
`exclude_gold_below` are left out, and named in the manifest. Gold answers are {"best": i}: the
position (0-based, as added) of the candidate that must come out on top.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from rlhf.config import documented
from rlhf.preferences import save_preferences
from rlhf.runs import RunDir, RunSettings
from rlhf.store import ExportSettings, Store, export_project


@dataclass
class ExportStageConfig(ExportSettings):
    run: RunSettings = field(default_factory=lambda: RunSettings(name="export"))
    store: str = documented("labels.db", help="SQLite path or postgresql:// URL")
    project: str = "demo"
    push_to_hub: str | None = None


def project_digest(items: list[dict], annotations: list[dict]) -> str:
    """What an export depends on, as one hash: the project's items (prompts, candidate texts and sources —
    i.e. which policy's answers) and every judgement's content (an edited vote changes it even when the
    count stays). Pure."""
    content = {
        "items": [[it["external_id"], it["prompt"], it["candidates"], it.get("is_gold")] for it in items],
        "votes": sorted(
            [
                a["item_id"],
                a["assessor"],
                sorted(a["values"].items()),
                a.get("payload"),
                a.get("flagged_unsafe"),
            ]
            for a in annotations
        ),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()


def current_digest(store_url: str, project: str) -> str:
    with Store(store_url, create=False) as store:
        return project_digest(store.items(project), store.annotations(project))


def run(cfg: ExportStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    with (
        RunDir.prepare(cfg.run, "export", cfg, resume=resume, overwrite=overwrite) as run_dir,
        Store(cfg.store, create=False) as store,
    ):
        rows, accounting = export_project(store, cfg.project, cfg)
        outputs = save_preferences(rows, run_dir.path, push_to_hub=cfg.push_to_hub) if rows else {}
        digest = project_digest(store.items(cfg.project), store.annotations(cfg.project))
        run_dir.update_manifest(
            accounting=accounting, store=cfg.store, project=cfg.project, project_digest=digest
        )
        run_dir.finish(outputs=outputs)
        dropped = ", ".join(f"{k}: {v}" for k, v in accounting["items_dropped"].items()) or "none"
        pairs_dropped = (
            ", ".join(f"{k}: {v}" for k, v in (accounting["pairs_dropped"] or {}).items()) or "none"
        )
        run_dir.say(
            f"export '{cfg.project}': {accounting['items_in']} items in, {accounting['items_exported']} "
            f"exported as {accounting['pairs_out']} pairs; items dropped: {dropped}; pairs dropped: "
            f"{pairs_dropped} -> {outputs.get('preferences', run_dir.path)}"
        )
        return run_dir
