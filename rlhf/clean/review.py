"""People in the loop for `rlhf clean`: rows the screening flagged (and, with `quality.pii: review`, rows
holding personal data) become items of a `review` labeling project. Each item shows the row's parts
labelled — prompt, chosen answer, rejected answer — and says which part matched which category; assessors
decide keep or drop, with a reason. The majority decision of each item says whether the row returns to the
data. A tie, or an item nobody judged yet, keeps the row out and is counted.

Decisions are scoped to the clean run that asked for them: every item carries the run's `review_id` (a
fresh id per run, in its external id and meta), and `--apply-review` reads only the items of that id —
a project reused by another run (or a re-run under the same name) never lends its decisions.
"""

from __future__ import annotations

from collections import Counter

from rlhf.store import Store

GUIDELINES = (
    "## Review flagged rows\n"
    "An automatic check flagged each row below — for a sensitive topic, or for personal data — and says which "
    "part matched. Decide whether the row may be used to train the model: **keep** it when it is legitimate "
    "(e.g. medical or educational material that mentions the topic; in preference data a harmful *rejected* "
    "answer is what teaches the model to refuse), **drop** it when it would teach the model something "
    "harmful or expose a person. Say why."
)
SIDE_NAMES = {
    "prompt": "Prompt",
    "chosen": "Chosen answer (the one the data prefers)",
    "rejected": "Rejected answer",
    "completion": "Completion (the answer trained on)",
}


def describe(flags: dict) -> str:
    """ "Flagged: weapons in the rejected answer (words: pipe bomb); personal data in the prompt (phone)"."""
    parts = []
    for name, sides in flags.items():
        for side, f in sides.items():
            why = []
            if f.get("lexicon"):
                why.append("words: " + ", ".join(f["lexicon"]))
            if f.get("similarity"):
                why.append(f"similar to its examples ({f['similarity']:.2f})")
            if f.get("kinds"):
                why.append(", ".join(f["kinds"]))
            label = "personal data" if name == "pii" else name
            parts.append(
                f"{label} in the {SIDE_NAMES.get(side, side).split(' (')[0].lower()} ({'; '.join(why)})"
            )
    return "Flagged: " + "; ".join(parts)


def labelled(parts: dict[str, str], flags: dict) -> str:
    """The row's parts under headings, each heading saying what was found in that part."""
    blocks = []
    for side, text in parts.items():
        hits = sorted(("personal data" if n == "pii" else n) for n, sides in flags.items() if side in sides)
        mark = f" — flagged: {', '.join(hits)}" if hits else ""
        blocks.append(f"#### {SIDE_NAMES.get(side, side)}{mark}\n\n{text}")
    return "\n\n".join(blocks)


def open_review(settings, flagged: list[dict], kind: str, *, run_name: str, review_id: str) -> dict:
    """Create (or reuse) the review project (task `review`) and add one item per flagged row."""
    items = [
        {
            "external_id": f"{f['id']}@{run_name}#{review_id}",
            "prompt": describe(f["flags"]),
            "candidates": [
                {
                    "text": labelled(f["parts"], f["flags"]),
                    "source": {"row_id": f["id"], "clean_run": run_name, "review_id": review_id},
                }
            ],
            "meta": {
                "row_id": f["id"],
                "flags": f["flags"],
                "clean_run": run_name,
                "review_id": review_id,
                "kind": kind,
            },
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
    return {"project": settings.project, "store": settings.store, "items": added, "review_id": review_id}


def decisions(items: list[dict], annotations: list[dict], review_id: str) -> dict[str, str]:
    """{row id: "keep" | "drop" | "tie" | "undecided"} by majority of the assessors' decisions, over the
    items this clean run (`review_id`) asked for only."""
    votes: dict[int, Counter] = {}
    for a in annotations:
        votes.setdefault(a["item_id"], Counter())[a["payload"].get("decision")] += 1
    out = {}
    for it in items:
        if (it.get("meta") or {}).get("review_id") != review_id:
            continue
        c = votes.get(it["id"], Counter())
        keep, drop = c.get("keep", 0), c.get("drop", 0)
        out[it["meta"]["row_id"]] = (
            "undecided" if keep + drop == 0 else "keep" if keep > drop else "drop" if drop > keep else "tie"
        )
    return out


def reviewed_rows(
    store_target: str, project: str, flagged: list[dict], review_id: str
) -> tuple[list[dict], dict]:
    """The flagged rows (as written by `rlhf clean`) whose review decided keep, and the counts."""
    with Store(store_target, create=False) as store:
        store.project(project)
        decided = decisions(store.items(project), store.annotations(project), review_id)
    rows = [f["row"] for f in flagged if decided.get(f["id"]) == "keep"]
    counts = dict(Counter(decided.get(f["id"], "not in the project") for f in flagged))
    return rows, {"review": counts, "rows_kept_by_review": len(rows), "review_id": review_id}
