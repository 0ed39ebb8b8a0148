"""`rlhf stats <project>`: agreement, gold accuracy and throughput of a labeling project.

    rlhf stats demo --store labels.db [--json]

- Krippendorff's alpha over all judgements: ordinal for rankings and Likert (unit = item x candidate,
  value = rank or score), nominal for pairwise (unit = item, value = the winning candidate, or tie /
  both bad). Undefined (None) when there is nothing to compare or no variation at all.
- Per assessor: agreement with the leave-one-out majority on each item's top choice, gold accuracy
  (top choice vs the gold 'best' candidate), annotations, active time and annotations per hour.
The arithmetic lives in `rlhf.agreement` (pure, hand-checked); this module only gathers the votes.
"""

from __future__ import annotations

import json

from rlhf import agreement
from rlhf.stages.export import top_choice


def project_stats(items: list[dict], annotations: list[dict], task: str) -> dict:
    units: dict = {}
    if task == "pairwise":
        for a in annotations:
            top = top_choice(a)
            choice = a["payload"].get("choice")
            units.setdefault(a["item_id"], {})[a["assessor"]] = top if top is not None else choice
        level = "nominal"
    else:
        for a in annotations:
            for cand, value in a["values"].items():
                units.setdefault((a["item_id"], cand), {})[a["assessor"]] = value
        level = "ordinal"
    tops = {}
    for a in annotations:
        tops.setdefault(a["item_id"], {})[a["assessor"]] = top_choice(a)
    gold = {
        it["id"]: it["gold"]["best"]
        for it in items
        if it["is_gold"] and isinstance(it["gold"], dict) and "best" in it["gold"]
    }
    position = {c["id"]: i for it in items for i, c in enumerate(it["candidates"])}
    answers = [
        (a["assessor"], a["item_id"], position.get(top_choice(a)))
        for a in annotations
        if a["item_id"] in gold
    ]
    with_majority = agreement.agreement_with_majority(tops)
    gold_acc = agreement.gold_accuracy(answers, gold)
    speed = agreement.throughput((a["assessor"], a["created_at"].timestamp()) for a in annotations)
    assessors = sorted({a["assessor"] for a in annotations})
    return {
        "task": task,
        "items": len(items),
        "annotations": len(annotations),
        "alpha": {"level": level, "value": agreement.krippendorff_alpha(units, level)},
        "assessors": {
            who: {
                "annotations": speed[who]["annotations"],
                "agreement_with_majority": with_majority.get(who, {}).get("rate"),
                "compared_with_majority": with_majority.get(who, {}).get("compared", 0),
                "gold_seen": gold_acc.get(who, {}).get("gold_seen", 0),
                "gold_accuracy": gold_acc.get(who, {}).get("accuracy"),
                "per_hour": speed[who]["per_hour"],
            }
            for who in assessors
        },
    }


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(stats: dict) -> str:
    a = stats["alpha"]
    lines = [
        f"task {stats['task']}: {stats['items']} items, {stats['annotations']} annotations; "
        f"Krippendorff's alpha ({a['level']}) = {_fmt(a['value'])}",
        "",
    ]
    cols = ["assessor", "annotations", "agree_w_majority", "gold_seen", "gold_accuracy", "per_hour"]
    rows = [
        [
            who,
            s["annotations"],
            s["agreement_with_majority"],
            s["gold_seen"],
            s["gold_accuracy"],
            s["per_hour"],
        ]
        for who, s in stats["assessors"].items()
    ]
    widths = [max(len(c), *(len(_fmt(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    lines += ["  ".join(_fmt(v).ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def main(args) -> int:
    from rlhf.store.service import Store

    store = Store(args.store)
    project = store.project(args.project)
    stats = project_stats(store.items(args.project), store.annotations(args.project), project.task)
    store.close()
    print(json.dumps(stats, indent=2, default=str) if args.json else table(stats))
    return 0
