"""People in the loop for `rlhf clean`: rows the screening flagged become items of a `review` labeling
project (one row per item, the flags shown with it; assessors decide keep or drop, with a reason); the
majority decision of each item says whether the row returns to the data. A tie, or an item nobody judged
yet, keeps the row out and is counted."""

from __future__ import annotations

from collections import Counter

from rlhf.store import Store

GUIDELINES = (
    "## Review flagged rows\n"
    "An automatic screen flagged each row below for a sensitive topic (shown with the row). Decide whether the "
    "row may be used to train the model: **keep** it when it is legitimate (e.g. medical or educational "
    "material that mentions the topic), **drop** it when it would teach the model something harmful. Say why."
)


def _describe(flags: dict) -> str:
    parts = []
    for name, f in flags.items():
        why = []
        if f.get("lexicon"):
            why.append("words: " + ", ".join(f["lexicon"]))
        if f.get("similarity"):
            why.append(f"similar to its examples ({f['similarity']:.2f})")
        parts.append(f"{name} ({'; '.join(why)})")
    return "Flagged: " + "; ".join(parts)


def open_review(settings, flagged: list[dict], kind: str, *, run_name: str) -> dict:
    """Create the review project (task `review`) with one item per flagged row."""
    items = [
        {
            "external_id": f"{f['id']}@{run_name}",
            "prompt": _describe(f["flags"]),
            "candidates": [{"text": f["text"], "source": {"row_id": f["id"], "clean_run": run_name}}],
            "meta": {"row_id": f["id"], "flags": f["flags"], "clean_run": run_name, "kind": kind},
        }
        for f in flagged
    ]
    with Store(settings.store) as store:
        store.create_project(
            settings.project,
            "review",
            overlap=settings.overlap,
            guidelines=GUIDELINES,
            rationale="required",
            exist_ok=True,
        )
        added = store.add_items(settings.project, items)
    return {"project": settings.project, "store": settings.store, "items": added}


def decisions(items: list[dict], annotations: list[dict]) -> dict[str, str]:
    """{row id: "keep" | "drop" | "tie" | "undecided"} by majority of the assessors' decisions."""
    votes: dict[int, Counter] = {}
    for a in annotations:
        votes.setdefault(a["item_id"], Counter())[a["payload"].get("decision")] += 1
    out = {}
    for it in items:
        c = votes.get(it["id"], Counter())
        keep, drop = c.get("keep", 0), c.get("drop", 0)
        out[it["meta"]["row_id"]] = (
            "undecided" if keep + drop == 0 else "keep" if keep > drop else "drop" if drop > keep else "tie"
        )
    return out


def reviewed_rows(store_target: str, project: str, flagged: list[dict]) -> tuple[list[dict], dict]:
    """The flagged rows (as written by `rlhf clean`) whose review decided keep, and the counts."""
    with Store(store_target, create=False) as store:
        store.project(project)
        decided = decisions(store.items(project), store.annotations(project))
    rows = [f["row"] for f in flagged if decided.get(f["id"]) == "keep"]
    counts = dict(Counter(decided.get(f["id"], "not in the project") for f in flagged))
    return rows, {"review": counts, "rows_kept_by_review": len(rows)}
