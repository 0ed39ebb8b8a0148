"""Export stage: a labeling project's judgements -> a preference dataset for reward/DPO training, or
unpaired rows for KTO.

    rlhf export --config configs/export.yaml [project=... aggregate=per_vote margin=true ...]
    rlhf export --config configs/export.yaml project=thumbs format=unpaired

Inputs : the store (SQLite file or PostgreSQL URL) and a project name.
Outputs: runs/<name>/preferences.jsonl and runs/<name>/dataset/ (datasets.save_to_disk) in TRL's preference
         format — conversational when any prompt is a message list — declared as the run's `preferences`
         and `dataset` outputs, plus the accounting in manifest.json (items in = items exported + items
         dropped, by reason; pairs dropped by reason). Optional push_to_hub: <repo id>.
         format=unpaired: runs/<name>/unpaired.jsonl (declared as `rows`) and dataset/ in TRL's KTO format
         (prompt, completion, label), from binary projects (majority label; ties dropped, counted), Likert
         projects (mean score against two thresholds) or ranked pairs (unpaired_from_pairs: true), with the
         desirable / undesirable balance in the accounting.

Choices: pairs come from `rlhf.store.export` (pure). Assessors whose gold accuracy is below
`exclude_gold_below` are left out, and named in the manifest. Gold answers are {"best": i}: the
position (0-based, as added) of the candidate that must come out on top; a binary item's are
{"label": "good" | "bad"}.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from rlhf.config import documented
from rlhf.preferences import save_preferences, save_unpaired
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
        save = save_unpaired if cfg.format == "unpaired" else save_preferences
        outputs = save(rows, run_dir.path, push_to_hub=cfg.push_to_hub) if rows else {}
        digest = project_digest(store.items(cfg.project), store.annotations(cfg.project))
        run_dir.update_manifest(
            accounting=accounting, store=cfg.store, project=cfg.project, project_digest=digest
        )
        run_dir.finish(outputs=outputs)
        run_dir.say(
            closing_line(
                cfg.project, accounting, outputs.get("preferences") or outputs.get("rows") or run_dir.path
            )
        )
        return run_dir


def closing_line(project: str, accounting: dict, out) -> str:
    listed = lambda counts: ", ".join(f"{k}: {v}" for k, v in (counts or {}).items()) or "none"  # noqa: E731
    head = (
        f"export '{project}': {accounting['items_in']} items in, {accounting['items_exported']} exported as "
    )
    if "balance" not in accounting:
        return (
            f"{head}{accounting['pairs_out']} pairs; items dropped: {listed(accounting['items_dropped'])}; pairs "
            f"dropped: {listed(accounting['pairs_dropped'])} -> {out}"
        )
    b = accounting["balance"]
    return (
        f"{head}{accounting['rows_out']} unpaired rows ({b['desirable']} desirable, {b['undesirable']} "
        f"undesirable); items dropped: {listed(accounting['items_dropped'])}; answers dropped: "
        f"{listed(accounting['answers_dropped'])} -> {out}"
    )
