"""What the labeling app does, as plain functions over the store — no Gradio here, so they are testable.

Every function takes the *server-side* identity (the logged-in username from the session, never from a
form field) and returns a `View`: what the assessor sees next, a status message, and a typed `outcome`
(shown / saved / refused / skipped) that the UI maps to updates — it never parses the message. The store enforces
the rules (assignment, leases, one judgement per item, validation), so a crafted call to any endpoint can
neither submit for another assessor nor for an item not leased to the caller.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from labeling_ui.render import render_prompt, safe_markdown
from rlhf.errors import RlhfError
from rlhf.store import JudgementError, values

LETTERS = "ABCDEFGHIJKLMNOP"
MAX_ORDER_CHARS = 200  # a typed ranking: letters and separators, far below this for MAX_CANDIDATES
PAIRWISE_LABELS = {"A": "A is better", "B": "B is better", "tie": "Tie", "both_bad": "Both bad"}
REVIEW_LABELS = {"keep": "Keep: fine to train on", "drop": "Drop: must not be learned"}


@dataclass
class View:
    task: str
    item_id: int | None = None
    prompt: object = None  # the raw prompt: a string or a message list
    prompt_md: str = ""
    candidates_md: list[str] = field(default_factory=list)  # display order, labelled A, B, ...
    candidate_ids: list[int] = field(default_factory=list)
    candidate_texts: list[str] = field(default_factory=list)  # raw, for the difference view
    progress: dict = field(default_factory=dict)
    message: str = ""  # plain text (it may quote a gold note or a refusal): shown via render.status_markdown
    done: bool = False  # no more items for this assessor
    outcome: Literal["shown", "saved", "refused", "skipped"] = "shown"  # what the last action did

    @property
    def progress_md(self) -> str:
        p = self.progress
        return f"**Today:** {p.get('done_today', 0)} · **Total:** {p.get('done_total', 0)} · **Left in queue:** {p.get('remaining', 0)}"


def next_view(store, project: str, username: str, message: str = "") -> View:
    task = store.project(project).task
    lease = store.next_item(project, username)
    progress = store.progress(project, username)
    if lease is None:
        done = "Nothing left to judge in this project for you. Thank you!"
        return View(task=task, progress=progress, done=True, message=f"{message} {done}".strip())
    return View(
        task=task,
        item_id=lease.item_id,
        prompt=lease.prompt,
        prompt_md=render_prompt(lease.prompt),
        candidates_md=[
            f"### {LETTERS[i]}\n\n{safe_markdown(c['text'])}" for i, c in enumerate(lease.candidates)
        ],
        candidate_ids=[c["id"] for c in lease.candidates],
        candidate_texts=[c["text"] for c in lease.candidates],
        progress=progress,
        message=message,
    )


def parse_ranking(order: str, candidate_ids: list[int]) -> list[int]:
    """'B, A, C' (letters best first, as typed or clicked) -> candidate ids. Duplicates are refused."""
    if len(order or "") > MAX_ORDER_CHARS:
        raise JudgementError(f"the ranking is too long: at most {MAX_ORDER_CHARS} characters (e.g. B,A,C)")
    letters = [x.strip().upper() for x in (order or "").replace(" ", ",").split(",") if x.strip()]
    valid = LETTERS[: len(candidate_ids)]
    bad = [x for x in letters if x not in valid]
    if bad:
        raise JudgementError(f"unknown candidate {bad[0]!r}; use the letters {', '.join(valid)}")
    if len(set(letters)) != len(letters):
        raise JudgementError("each candidate may have only one rank (a letter appears twice)")
    if len(letters) != len(candidate_ids):
        raise JudgementError(
            f"rank all {len(candidate_ids)} candidates, best first (e.g. {', '.join(valid)})"
        )
    return [candidate_ids[valid.index(x)] for x in letters]


def build_payload(
    task: str,
    candidate_ids: list[int],
    *,
    choice: str | None = None,
    order: str | None = None,
    scores: list[int | float | None] | None = None,
) -> dict:
    if task == "pairwise":
        return {"choice": choice}
    if task == "review":
        return {"decision": choice}
    if task == "binary":
        return {"label": choice}
    if task == "ranking":
        return {"ranking": parse_ranking(order or "", candidate_ids)}
    scores = list(scores or [])[: len(candidate_ids)]
    if len(scores) < len(candidate_ids) or any(s is None for s in scores):
        raise JudgementError(f"score all {len(candidate_ids)} candidates (1-7)")
    return {"scores": {str(c): int(s) for c, s in zip(candidate_ids, scores, strict=True)}}


def submit(
    store,
    project: str,
    username: str,
    item_id: int | None,
    *,
    client_token: str,
    choice: str | None = None,
    order: str | None = None,
    scores: list | None = None,
    rationale: str = "",
    flagged_unsafe: bool = False,
    edit_of: str | None = None,
    edit_text: str = "",
) -> View:
    """Store the judgement and return the next item; on a refusal, the same item with the reason.
    `edit_of` (a letter) and `edit_text`: edit-to-improve, stored as a new candidate preferred over that one.
    The store checks the free text (its length limits, `TextLimits`) and that `flagged_unsafe` is a bool:
    a refusal names the field and the limit, and nothing is stored."""
    if item_id is None:
        return next_view(store, project, username)
    try:
        shown = store.shown_order(project, username, int(item_id))  # refuses items not assigned to the caller
        payload = build_payload(store.project(project).task, shown, choice=choice, order=order, scores=scores)
        edit = None
        if isinstance(edit_text, str) and edit_text.strip():
            letter = edit_of.strip().upper() if isinstance(edit_of, str) else ""
            if not letter or letter not in LETTERS[: len(shown)]:
                raise JudgementError(f"say which response you improved ({', '.join(LETTERS[: len(shown)])})")
            edit = {"base": shown[LETTERS.index(letter)], "text": edit_text}
        store.submit(
            project,
            username,
            int(item_id),
            payload,
            client_token=client_token,
            rationale=rationale,
            flagged_unsafe=flagged_unsafe,
            edit=edit,
        )
    except RlhfError as e:
        view = next_view(store, project, username)
        view.message, view.outcome = f"Not saved: {e}", "refused"
        return view
    message = "Saved." + gold_feedback(
        store.gold_info(int(item_id)), payload, shown, store.project(project).task
    )
    view = next_view(store, project, username, message=message)
    view.outcome = "saved"
    return view


def gold_feedback(gold: dict | None, payload: dict, shown: list[int], task: str) -> str:
    """After a gold item: whether the judgement put the expected answer on top (binary: gave the expected
    label), and why (the gold note)."""
    if gold is None:
        return ""
    note = f" {gold['note']}" if gold["note"] else ""
    if "label" in gold:
        if payload.get("label") == gold["label"]:
            return f" Gold check: you matched the expected answer ({gold['label']}).{note}"
        return f" Gold check: the expected answer was {gold['label']}.{note}"
    vals = values(task, payload, shown)
    best = max(vals.values()) if task == "likert" else min(vals.values())
    tops = [c for c, v in vals.items() if v == best]
    letter = LETTERS[shown.index(gold["best"])] if gold["best"] in shown else "?"
    if tops == [gold["best"]]:
        return f" Gold check: you matched the expected answer ({letter}).{note}"
    return f" Gold check: the expected best answer was {letter}.{note}"


def skip(store, project: str, username: str, item_id: int | None, reason: str) -> View:
    if item_id is None:
        return next_view(store, project, username)
    try:
        store.skip(project, username, int(item_id), reason)
    except RlhfError as e:
        view = next_view(store, project, username)
        view.message, view.outcome = f"Not skipped: {e}", "refused"
        return view
    view = next_view(store, project, username, message="Skipped.")
    view.outcome = "skipped"
    return view
