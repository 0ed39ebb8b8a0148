"""Clean stage: de-duplicate, filter, decontaminate and screen rows before training and labeling; flagged
rows go to people, never silently away.

    rlhf clean --config configs/clean.yaml [data.source=... dedup.fuzzy.threshold=0.7 ...]
    rlhf clean --config configs/clean.yaml --apply-review NAME     # apply the assessors' keep/drop decisions

Inputs : any rows the stages read (SFT rows, prompts, preference pairs — TRL or HH-RLHF —, an export or
         import run), evaluation sets to decontaminate against, a store for the review project.
Outputs: runs/<name>/rows.jsonl and dataset/ (the cleaned rows, PII redacted, in their own format: point
         any stage's data at this run), report.jsonl (every removed or flagged row with id, reason and
         detail), flagged.jsonl (rows held for review), redactions.jsonl (every piece of personal data
         replaced: row, column, kind, span) — the declared outputs — and the accounting:
         rows in = kept + removed (by reason) + sent to review.

Order: validation (what training would reject) -> quality (length, Gopher repetition by datatrove, junk,
language) -> PII (Presidio: redact, drop, or send to review) -> decontamination (prompts and answers against
the evaluation sets) -> contradictory pairs -> exact -> MinHash -> semantic de-duplication
(`rlhf.clean.dedup`; part by part: a preference pair is a duplicate only when its prompt and both answers
are; the row kept is the first by `dedup.keep`) -> content screening of the parts in `screening.screen`
(prompt and chosen by default: a harmful *rejected* answer is what harmlessness data looks like).

Assumptions: rows keep their ids (or line numbers) across the steps; flagged rows are held out of rows.jsonl
and, with `review.project`, become items of a `review` labeling project tagged with this run's `review_id`
(keep / drop with a reason); `--apply-review` writes `<name>-reviewed` with the rows the assessors'
majority kept, reading only the decisions asked for by this run.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from dataclasses import dataclass, field

from rlhf.clean import (
    DecontaminationSettings,
    DedupSettings,
    Kind,
    Ledger,
    QualitySettings,
    ReviewSettings,
    ScreeningSettings,
    decontaminate,
    deduplicate,
    detect_kind,
    open_review,
    reviewed_rows,
    screen,
    validate_and_filter,
)
from rlhf.config import documented
from rlhf.data import load_rows, source_path
from rlhf.errors import DataError
from rlhf.preferences import write_jsonl
from rlhf.runs import RunDir, RunSettings


@dataclass
class CleanData:
    source: str = documented(
        "demo:preferences", help="demo:<name> | .jsonl/.json/.parquet | dataset dir | run dir | hub id"
    )
    split: str = "train"
    kind: Kind = "auto"


@dataclass
class CleanStageConfig:
    run: RunSettings = field(default_factory=lambda: RunSettings(name="clean"))
    data: CleanData = field(default_factory=CleanData)
    quality: QualitySettings = field(default_factory=QualitySettings)
    dedup: DedupSettings = field(default_factory=DedupSettings)
    decontaminate: DecontaminationSettings = field(default_factory=DecontaminationSettings)
    screening: ScreeningSettings = field(default_factory=ScreeningSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)


def run(cfg: CleanStageConfig, *, resume: bool = False, overwrite: bool = False) -> RunDir:
    with RunDir.prepare(cfg.run, "clean", cfg, resume=resume, overwrite=overwrite) as run_dir:
        rows = load_rows(cfg.data.source, what="data.source", split=cfg.data.split)
        run_dir.record_input("data.source", cfg.data.source, source_path(cfg.data.source))
        kind = cfg.data.kind if cfg.data.kind != "auto" else detect_kind(rows.rows)
        ledger = Ledger()
        for bad in rows.unreadable:
            ledger.remove(bad.id, bad.reason.split(":")[0], detail=bad.reason)
        live = validate_and_filter(cfg.quality, kind, rows, ledger)
        live = decontaminate(cfg.decontaminate, live, ledger, run_dir)
        live = deduplicate(cfg.dedup, kind, live, ledger)
        live = screen(cfg.screening, kind, live, ledger)
        outputs, counts = _write(cfg, run_dir, live, ledger, rows, kind)
        run_dir.finish(result=counts, outputs=outputs)
        run_dir.say(
            f"clean: {counts['rows_in']} rows in, {counts['rows_kept']} kept, {counts['rows_removed']} removed"
            + (
                " (" + ", ".join(f"{k} {v}" for k, v in counts["removed_by_reason"].items()) + ")"
                if counts["rows_removed"]
                else ""
            )
            + f", {counts['rows_to_review']} sent to review -> {outputs['rows']}"
        )
        return run_dir


def _write(cfg, run_dir: RunDir, live, ledger: Ledger, rows, kind: str) -> tuple[dict, dict]:
    review_id = uuid.uuid4().hex[:12]
    outputs = {"rows": write_jsonl([i["raw"] for i in live], run_dir.path / "rows.jsonl")}
    report = ledger.removed + [
        {"id": f["id"], "reason": "sent to review", "flags": f["flags"]} for f in ledger.flagged
    ]
    outputs["report"] = write_jsonl(report, run_dir.path / "report.jsonl")
    outputs["flagged"] = write_jsonl(
        [
            {"id": f["id"], "row": f["raw"], "flags": f["flags"], "review_id": review_id}
            for f in ledger.flagged
        ],
        run_dir.path / "flagged.jsonl",
    )
    outputs["redactions"] = write_jsonl(ledger.redactions, run_dir.path / "redactions.jsonl")
    review = None
    if ledger.flagged and cfg.review.project:
        review = open_review(cfg.review, ledger.flagged, kind, run_name=cfg.run.name, review_id=review_id)
    counts = {
        "kind": kind,
        "rows_in": rows.count,
        "rows_kept": len(live),
        "rows_removed": len(ledger.removed),
        "removed_by_reason": dict(Counter(r["reason"] for r in ledger.removed)),
        "rows_to_review": len(ledger.flagged),
        "flagged_by_category": dict(Counter(c for f in ledger.flagged for c in f["flags"])),
        "flagged_by_side": dict(
            Counter(s for f in ledger.flagged for sides in f["flags"].values() for s in sides)
        ),
        "review_project": review,
        "review_id": review_id,
        "pii_found": dict(Counter(r["kind"] for r in ledger.redactions)),
        "rows_redacted": len({r["id"] for r in ledger.redactions}),
        "blank_lines": rows.blank_lines,
        **ledger.notes,
    }
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_removed"] + counts["rows_to_review"]:
        raise DataError(f"clean: the accounting does not add up ({counts}); this is a bug, please report it.")
    (run_dir.path / "summary.json").write_text(json.dumps(counts, indent=2))
    return outputs, counts


def apply_review(cfg: CleanStageConfig, project: str, *, overwrite: bool = False) -> RunDir:
    """`--apply-review NAME`: the clean run's rows plus the flagged rows the review's majority kept."""
    source = RunDir.at(cfg.run)
    settings = RunSettings(
        name=f"{cfg.run.name}-reviewed", output_root=cfg.run.output_root, seed=cfg.run.seed
    )
    with RunDir.prepare(
        settings,
        "clean-review",
        {"clean_run": str(source.path), "project": project, "store": cfg.review.store},
        overwrite=overwrite,
    ) as run_dir:
        kept = [json.loads(x) for x in source.output("rows").read_text().splitlines() if x]
        flagged = [json.loads(x) for x in source.output("flagged").read_text().splitlines() if x]
        review_id = source.read_manifest().get("result", {}).get("review_id", "")
        decided, counts = reviewed_rows(cfg.review.store, project, flagged, review_id)
        out = write_jsonl(kept + decided, run_dir.path / "rows.jsonl")
        counts.update(rows_from_clean=len(kept), rows_out=len(kept) + len(decided))
        run_dir.finish(result=counts, outputs={"rows": out})
        run_dir.say(f"review applied: {counts} -> {out}")
        return run_dir
