"""`rlhf stats <project>`: agreement, gold accuracy and throughput of a labeling project.

    rlhf stats demo --store labels.db [--json]

- Krippendorff's alpha over all judgements: ordinal for rankings and Likert (unit = item x candidate,
  value = rank or score), nominal for pairwise (unit = item, value = the winning candidate, or tie /
  both bad). Undefined (None) when there is nothing to compare or no variation at all.
- Per assessor: agreement with the leave-one-out majority on each item's top choice, gold accuracy
  (top choice vs the gold 'best' candidate), annotations, active time and annotations per hour.
The numbers come from `rlhf.store.quality` (shared with export and the app); this module prints them.
"""

from __future__ import annotations

import json

from rlhf.store import Store, project_stats


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
    with Store(args.store, create=False) as store:
        project = store.project(args.project)
        stats = project_stats(store.items(args.project), store.annotations(args.project), project.task)
    print(json.dumps(stats, indent=2, default=str) if args.json else table(stats))
    return 0
