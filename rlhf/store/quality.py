"""Quality of a labeling project's judgements, computed from plain item and annotation dicts (as
`Store.items` / `Store.annotations` return them) — used by `rlhf stats`, `rlhf export` and the app's Admin tab.

- `top_choice`: the candidate a judgement puts strictly on top (None when tied at the top).
- `gold_failures`: assessors whose gold accuracy (top choice vs the gold 'best' candidate) is below a bar.
- `project_stats`: Krippendorff's alpha over all judgements — ordinal for rankings and Likert (unit = item x
  candidate, value = rank or score), nominal for pairwise (unit = item, value = the winning candidate, or
  tie / both bad) and for binary (unit = item, value = good / bad); per assessor: agreement with the
  leave-one-out majority, gold accuracy, throughput.
- A binary judgement's answer is its label: its gold is {"label": "good" | "bad"}, and agreement and gold
  accuracy compare labels (the other tasks compare the top choice with the gold 'best' candidate).
The arithmetic lives in `rlhf.store.agreement` (pure, hand-checked). No I/O here.
"""

from __future__ import annotations

from rlhf.store import agreement


def top_choice(annotation: dict) -> int | None:
    """The candidate a judgement puts strictly on top, or None (tie at the top)."""
    vals = annotation["values"]
    best = max(vals.values()) if annotation["kind"] == "likert" else min(vals.values())
    tops = [c for c, v in vals.items() if v == best]
    return tops[0] if len(tops) == 1 else None


def answer(annotation: dict):
    """What a judgement answers, as agreement and gold compare it: a binary judgement's label, else the
    candidate it puts strictly on top (None when tied at the top)."""
    if annotation["kind"] == "binary":
        return annotation["payload"].get("label")
    return top_choice(annotation)


def gold_answers(items: list[dict], annotations: list[dict]) -> tuple[dict, list[tuple]]:
    """({gold item id: position of the gold 'best' candidate, or a binary item's gold label}, [(assessor,
    item id, position of their top choice or None / their label)] for the judgements of gold items)."""
    gold = {}
    for it in items:
        g = it["gold"]
        if it["is_gold"] and isinstance(g, dict) and ("best" in g or "label" in g):
            gold[it["id"]] = g["best"] if "best" in g else g["label"]
    position = {c["id"]: i for it in items for i, c in enumerate(it["candidates"])}
    answers = [
        (
            a["assessor"],
            a["item_id"],
            answer(a) if a["kind"] == "binary" else position.get(top_choice(a)),
        )
        for a in annotations
        if a["item_id"] in gold
    ]
    return gold, answers


def gold_failures(items: list[dict], annotations: list[dict], threshold: float) -> dict:
    """{assessor: gold accuracy} for the assessors under `threshold`."""
    gold, answers = gold_answers(items, annotations)
    acc = agreement.gold_accuracy([a for a in answers if a[2] is not None], gold)
    return {
        who: r["accuracy"]
        for who, r in acc.items()
        if r["accuracy"] is not None and r["accuracy"] < threshold
    }


def median(values: list[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def speed(annotations: list[dict], too_fast_ratio: float) -> dict:
    """{"project_median_s", "assessors": {who: {"median_s", "too_fast"}}}: an assessor whose median time per
    judgement is below `too_fast_ratio` x the project's median is flagged "too fast"."""
    secs = [a["seconds"] for a in annotations if a.get("seconds") is not None]
    overall = median(secs)
    per: dict[str, list[float]] = {}
    for a in annotations:
        if a.get("seconds") is not None:
            per.setdefault(a["assessor"], []).append(a["seconds"])
    out = {}
    for who, v in per.items():
        m = median(v)
        out[who] = {"median_s": m, "too_fast": overall is not None and m < too_fast_ratio * overall}
    return {"project_median_s": overall, "assessors": out}


def gold_over_time(items: list[dict], annotations: list[dict], window: int = 10) -> dict[str, dict]:
    """Per assessor: gold accuracy overall and over their last `window` gold items (are they learning?)."""
    gold, answers = gold_answers(items, annotations)  # in the annotations' order: submit order
    per: dict[str, list[bool]] = {}
    for who, item, pos in answers:
        per.setdefault(who, []).append(pos == gold[item])
    return {
        who: {
            "gold_seen": len(v),
            "accuracy": sum(v) / len(v),
            f"last_{window}": sum(v[-window:]) / len(v[-window:]),
        }
        for who, v in per.items()
    }


def project_stats(
    items: list[dict], annotations: list[dict], task: str, *, too_fast_ratio: float = 0.25
) -> dict:
    units: dict = {}
    if task == "binary":
        for a in annotations:
            units.setdefault(a["item_id"], {})[a["assessor"]] = answer(a)
        level = "nominal"
    elif task == "pairwise":
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
    tops: dict = {}
    for a in annotations:
        tops.setdefault(a["item_id"], {})[a["assessor"]] = answer(a)
    gold, answers = gold_answers(items, annotations)
    with_majority = agreement.agreement_with_majority(tops)
    gold_acc = agreement.gold_accuracy(answers, gold)
    rate = agreement.throughput((a["assessor"], a["created_at"].timestamp()) for a in annotations)
    assessors = sorted({a["assessor"] for a in annotations})
    pace = speed(annotations, too_fast_ratio)
    return {
        "task": task,
        "items": len(items),
        "annotations": len(annotations),
        "alpha": {"level": level, "value": agreement.krippendorff_alpha(units, level)},
        "assessors": {
            who: {
                "annotations": rate[who]["annotations"],
                "agreement_with_majority": with_majority.get(who, {}).get("rate"),
                "compared_with_majority": with_majority.get(who, {}).get("compared", 0),
                "gold_seen": gold_acc.get(who, {}).get("gold_seen", 0),
                "gold_accuracy": gold_acc.get(who, {}).get("accuracy"),
                "per_hour": rate[who]["per_hour"],
                "median_seconds": pace["assessors"].get(who, {}).get("median_s"),
                "too_fast": pace["assessors"].get(who, {}).get("too_fast", False),
            }
            for who in assessors
        },
        "median_seconds": pace["project_median_s"],
    }
