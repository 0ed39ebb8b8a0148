"""Annotations -> TRL preference rows. Pure: items and annotations in, rows and accounting out.

Each judgement becomes (better, worse) candidate pairs (`judgements.preferences`): a pairwise choice
gives one pair (tie / both bad give none), a k-wise ranking all C(k,2) pairs or best-vs-others, Likert
scores every pair with different scores. Then, per item:
  aggregate=majority  one row per candidate pair that a strict majority of the votes on it prefers one
                      way; `margin` = (for - against) / votes on the pair when asked (vote strength)
  aggregate=per_vote  one row per vote's pair (the same pair may appear several times)
An edit-to-improve adds the pair (edited text > the candidate it was edited from).
Assessors can be excluded (e.g. those who failed gold items). Gold items are left out unless asked.
Accounting: items_in = items_exported + sum(items_dropped by reason); pairs dropped are counted too.
`export_project` is the glue both `rlhf export` and the app's Export button use: it reads the project from
a store, leaves out failing assessors, and calls `export_rows`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Literal

from rlhf.config import bounded, documented
from rlhf.errors import ConfigError
from rlhf.store import judgements
from rlhf.store.quality import gold_failures


@dataclass
class ExportSettings:
    aggregate: Literal["majority", "per_vote"] = "majority"
    pairs: Literal["all_pairs", "best_vs_others"] = documented("all_pairs", help="for k-wise rankings")
    margin: bool = documented(False, help="add a `margin` column from the vote split")
    include_gold: bool = False
    include_flagged: bool = documented(
        False, help="items an assessor flagged unsafe are left out (counted) unless true"
    )
    exclude_assessors: list[str] = field(default_factory=list)
    min_seconds: float | None = bounded(None, ge=0, help="judgements faster than this are left out (counted)")
    exclude_gold_below: float | None = bounded(
        None, ge=0, le=1, help="e.g. 0.7: drop assessors under 70 % gold accuracy"
    )


def export_project(store, project: str, settings: ExportSettings) -> tuple[list[dict], dict]:
    """A store's project -> (preference rows, accounting with the excluded assessors and why)."""
    task = store.project(project).task
    if task == "review":
        raise ConfigError(
            f"project '{project}' is a review project (keep/drop decisions on flagged rows, not preferences); "
            f"apply its decisions with `rlhf clean --config ... --apply-review {project}`."
        )
    items, anns = store.items(project), store.annotations(project)
    excluded = dict.fromkeys(settings.exclude_assessors, "listed in exclude_assessors")
    if settings.exclude_gold_below is not None:
        for who, acc in gold_failures(items, anns, settings.exclude_gold_below).items():
            excluded[who] = f"gold accuracy {acc:.2f} < {settings.exclude_gold_below}"
    effective = replace(settings, exclude_assessors=sorted(excluded))
    rows, accounting = export_rows(items, anns, task, effective)
    accounting["excluded_assessors"] = excluded
    return rows, accounting


def _as_messages(prompt, text: str):
    if isinstance(prompt, list):
        return [{"role": "assistant", "content": text}]
    return text


def export_rows(
    items: list[dict], annotations: list[dict], task: str, settings: ExportSettings
) -> tuple[list[dict], dict]:
    """Rows in TRL's preference format (conversational when the prompt is messages), and the accounting."""
    excluded = set(settings.exclude_assessors)
    by_item: dict[int, list[dict]] = defaultdict(list)
    votes_excluded = votes_too_fast = 0
    for a in annotations:
        if a["assessor"] in excluded:
            votes_excluded += 1
            continue
        if (
            settings.min_seconds is not None
            and a.get("seconds") is not None
            and a["seconds"] < settings.min_seconds
        ):
            votes_too_fast += 1
            continue
        by_item[a["item_id"]].append(a)
    rows: list[dict] = []
    items_dropped: Counter = Counter()
    pairs_dropped: Counter = Counter()
    items_exported = 0
    for item in items:
        if item["is_gold"] and not settings.include_gold:
            items_dropped["gold item"] += 1
            continue
        votes = by_item.get(item["id"], [])
        if not votes:
            items_dropped["no annotations"] += 1
            continue
        if not settings.include_flagged and any(v.get("flagged_unsafe") for v in votes):
            items_dropped["flagged unsafe by an assessor"] += 1
            continue
        texts = {c["id"]: c["text"] for c in item["candidates"]}
        item_rows = _item_rows(item, votes, task, settings, texts, pairs_dropped)
        if item_rows:
            rows.extend(item_rows)
            items_exported += 1
        else:
            items_dropped[_why_empty(votes, task, settings)] += 1
    accounting = {
        "items_in": len(items),
        "items_exported": items_exported,
        "items_dropped": {k: v for k, v in items_dropped.items() if v},
        "pairs_out": len(rows),
        "pairs_dropped": dict(pairs_dropped),
        "votes_in": len(annotations),
        "votes_excluded_assessors": votes_excluded,
        "votes_too_fast": votes_too_fast,
        "settings": {
            "aggregate": settings.aggregate,
            "pairs": settings.pairs,
            "margin": settings.margin,
            "include_gold": settings.include_gold,
            "include_flagged": settings.include_flagged,
            "min_seconds": settings.min_seconds,
            "exclude_assessors": sorted(excluded),
        },
    }
    return rows, accounting


def _why_empty(votes: list[dict], task: str, settings: ExportSettings) -> str:
    any_pair = any(judgements.preferences(task, v["values"], mode=settings.pairs)[0] for v in votes)
    return "no majority" if any_pair else "only ties"


def _item_rows(
    item: dict, votes: list[dict], task: str, settings: ExportSettings, texts: dict, pairs_dropped: Counter
) -> list[dict]:
    prompt = item["prompt"]
    per_vote: list[tuple[int, int, str]] = []
    for v in votes:
        pairs, ties = judgements.preferences(task, v["values"], mode=settings.pairs)
        if ties:
            pairs_dropped["tie"] += ties
        per_vote.extend((a, b, v["assessor"]) for a, b in pairs)
        edit = (v.get("payload") or {}).get("edit")
        if edit and edit.get("candidate") in texts:  # edit-to-improve: the assessor's rewrite beats its base
            per_vote.append((edit["candidate"], edit["base"], v["assessor"]))

    def row(better: int, worse: int, **extra) -> dict:
        return {
            "id": f"{item['external_id']}:{better}>{worse}",
            "item_id": item["external_id"],
            "prompt": prompt,
            "chosen": _as_messages(prompt, texts[better]),
            "rejected": _as_messages(prompt, texts[worse]),
            **extra,
        }

    if settings.aggregate == "per_vote":
        return [row(a, b, assessor=who) for a, b, who in per_vote]
    tally: Counter = Counter((a, b) for a, b, _ in per_vote)
    votes_on_pair: Counter = Counter(frozenset((a, b)) for a, b, _ in per_vote)
    out, seen = [], set()
    for (a, b), n_for in sorted(tally.items()):
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        n_against = tally.get((b, a), 0)
        if n_for == n_against:
            pairs_dropped["no majority"] += 1
            continue
        better, worse = (a, b) if n_for > n_against else (b, a)
        extra = {"margin": abs(n_for - n_against) / votes_on_pair[key]} if settings.margin else {}
        out.append(row(better, worse, **extra))
    return out
