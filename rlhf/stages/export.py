"""Export stage: a labeling project's judgements -> a preference dataset for reward/DPO training.

    rlhf export --config configs/export.yaml [project=... aggregate=per_vote margin=true ...]

Inputs : the store (SQLite file or PostgreSQL URL) and a project name.
Outputs: runs/<name>/preferences.jsonl and runs/<name>/dataset/ (datasets.save_to_disk) in TRL's preference
         format — conversational when any prompt is a message list — plus the accounting in manifest.json
         (items in = items exported + items dropped, by reason; pairs dropped by reason). Optional
         push_to_hub: <repo id>.

Choices: pairs come from `rlhf.store.export` (pure). Assessors whose gold accuracy is below
`exclude_gold_below` are left out, and named in the manifest. Gold answers are {"best": i}: the
position (0-based, as added) of the candidate that must come out on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rlhf.config import ConfigError
from rlhf.runs import RunDir, RunSettings
from rlhf.store.export import AGGREGATES, PAIRINGS, ExportSettings, export_rows


@dataclass
class ExportStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="export"))
    store: str = "labels.db"  # SQLite path or postgresql:// URL
    project: str = "demo"
    aggregate: str = "majority"  # majority | per_vote
    pairs: str = "all_pairs"  # all_pairs | best_vs_others
    margin: bool = False
    include_gold: bool = False
    exclude_assessors: list[str] = field(default_factory=list)
    exclude_gold_below: float | None = None  # e.g. 0.7: drop assessors under 70 % gold accuracy
    push_to_hub: str | None = None

    def __post_init__(self):
        if self.aggregate not in AGGREGATES:
            raise ConfigError(f"'aggregate' must be one of {', '.join(AGGREGATES)}; got {self.aggregate!r}.")
        if self.pairs not in PAIRINGS:
            raise ConfigError(f"'pairs' must be one of {', '.join(PAIRINGS)}; got {self.pairs!r}.")
        if self.exclude_gold_below is not None and not 0 <= self.exclude_gold_below <= 1:
            raise ConfigError(f"'exclude_gold_below' must be in [0, 1], got {self.exclude_gold_below}.")


def to_one_format(rows: list[dict]) -> list[dict]:
    """A dataset needs one type per column: if any prompt is a conversation, make every row conversational."""
    if not any(isinstance(r["prompt"], list) for r in rows):
        return rows
    out = []
    for r in rows:
        if isinstance(r["prompt"], list):
            out.append(r)
            continue
        out.append(
            {
                **r,
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
        )
    return out


def save_preferences(rows: list[dict], out_dir: Path, *, push_to_hub: str | None = None) -> dict:
    """Write rows as jsonl and as a datasets dataset; returns the output paths."""
    from datasets import Dataset

    from rlhf.errors import DataError
    from rlhf.preferences import write_jsonl

    rows = to_one_format(rows)
    jsonl = write_jsonl(rows, out_dir / "preferences.jsonl")
    ds = Dataset.from_list(rows)
    ds.save_to_disk(str(out_dir / "dataset"))
    outputs = {"jsonl": str(jsonl), "dataset": str(out_dir / "dataset"), "rows": len(rows)}
    if push_to_hub:
        try:
            ds.push_to_hub(push_to_hub)
        except Exception as e:  # noqa: BLE001 - offline / auth: say so, keep the local outputs
            raise DataError(
                f"push_to_hub '{push_to_hub}' failed ({type(e).__name__}: {e}); the local copies "
                f"are in {out_dir}"
            ) from None
        outputs["hub"] = push_to_hub
    return outputs


def gold_failures(items: list[dict], annotations: list[dict], threshold: float) -> dict:
    """{assessor: gold accuracy} for the assessors under `threshold` (top choice vs the gold 'best')."""
    from rlhf.agreement import gold_accuracy

    gold, position = {}, {}
    for it in items:
        if it["is_gold"] and isinstance(it["gold"], dict) and "best" in it["gold"]:
            gold[it["id"]] = it["gold"]["best"]
            position.update({c["id"]: i for i, c in enumerate(it["candidates"])})
    answers = [
        (a["assessor"], a["item_id"], position[top_choice(a)])
        for a in annotations
        if a["item_id"] in gold and top_choice(a) is not None
    ]
    acc = gold_accuracy(answers, gold)
    return {
        who: r["accuracy"]
        for who, r in acc.items()
        if r["accuracy"] is not None and r["accuracy"] < threshold
    }


def top_choice(annotation: dict) -> int | None:
    """The candidate a judgement puts strictly on top, or None (tie at the top)."""
    vals = annotation["values"]
    best = max(vals.values()) if annotation["kind"] == "likert" else min(vals.values())
    tops = [c for c, v in vals.items() if v == best]
    return tops[0] if len(tops) == 1 else None


def run(cfg: ExportStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    from rlhf.store.service import Store

    run_dir = RunDir.prepare(cfg.run, "export", cfg, resume=resume, overwrite=overwrite)
    try:
        store = Store(cfg.store)
        project = store.project(cfg.project)
        items, anns = store.items(cfg.project), store.annotations(cfg.project)
        excluded = dict.fromkeys(cfg.exclude_assessors, "listed in exclude_assessors")
        if cfg.exclude_gold_below is not None:
            for who, acc in gold_failures(items, anns, cfg.exclude_gold_below).items():
                excluded[who] = f"gold accuracy {acc:.2f} < {cfg.exclude_gold_below}"
        settings = ExportSettings(
            aggregate=cfg.aggregate,
            pairs=cfg.pairs,
            margin=cfg.margin,
            include_gold=cfg.include_gold,
            exclude_assessors=sorted(excluded),
        )
        rows, accounting = export_rows(items, anns, project.task, settings)
        accounting["excluded_assessors"] = excluded
        outputs = save_preferences(rows, run_dir.path, push_to_hub=cfg.push_to_hub) if rows else {"rows": 0}
        run_dir.update_manifest(accounting=accounting, outputs=outputs, store=cfg.store, project=cfg.project)
        run_dir.finish()
        dropped = ", ".join(f"{k}: {v}" for k, v in accounting["items_dropped"].items()) or "none"
        print(
            f"[rlhf] export '{cfg.project}': {accounting['items_in']} items in, {accounting['items_exported']} "
            f"exported as {accounting['pairs_out']} pairs; items dropped: {dropped}; pairs dropped: "
            f"{accounting['pairs_dropped'] or 'none'} -> {run_dir.path}",
            flush=True,
        )
        store.close()
        return run_dir
    except BaseException as e:
        run_dir.fail(f"{type(e).__name__}: {e}")
        raise
