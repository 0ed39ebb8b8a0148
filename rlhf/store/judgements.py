"""Judgement payloads per task kind: validation and per-candidate values. Pure functions, no database.

pairwise  {"choice": "A" | "B" | "tie" | "both_bad"}   A/B = the two candidates in the order shown
ranking   {"ranking": [candidate ids, best first]}     a full ranking: every candidate exactly once
likert    {"scores": {candidate id: 1..7}}             every candidate scored
review    {"decision": "keep" | "drop"}                one candidate (a row `rlhf clean` flagged); no pairs
binary    {"label": "good" | "bad"}                    one candidate (a policy's answer): thumbs up / down;
                                                       no pairs — exported unpaired, for KTO

`values` returns {candidate_id: value}: a rank (1 = best; ties share a rank) for pairwise and ranking, the
score for likert, 1 (keep / good) or 0 (drop / bad) for review and binary. `preferences` turns one
judgement into ordered (better, worse) candidate pairs plus the number of tied pairs — the unit that export
aggregates.
"""

from __future__ import annotations

from itertools import combinations
from typing import Literal, get_args

from rlhf.errors import RlhfError

Task = Literal["pairwise", "ranking", "likert", "review", "binary"]
PreferenceTask = Literal["pairwise", "ranking", "likert"]  # the tasks whose judgements are preferences
AnswerTask = Literal["pairwise", "ranking", "likert", "binary"]  # judging a policy's answers: `rlhf generate`
Rationale = Literal["off", "optional", "required"]
Priority = Literal["random", "fifo"]
TASKS, RATIONALE, PRIORITIES = get_args(Task), get_args(Rationale), get_args(Priority)
PAIRWISE_CHOICES = ("A", "B", "tie", "both_bad")
REVIEW_DECISIONS = ("keep", "drop")
BINARY_LABELS = ("good", "bad")
ONE_CANDIDATE_TASKS = ("review", "binary")  # an item holds exactly one candidate
LIKERT_MIN, LIKERT_MAX = 1, 7
MAX_CANDIDATES = 8  # per item: what one screen can show side by side
PAYLOAD_KEYS = {
    "pairwise": "choice",
    "ranking": "ranking",
    "likert": "scores",
    "review": "decision",
    "binary": "label",
}


class JudgementError(RlhfError):
    """A submitted judgement that does not fit the task; the message says what is wrong."""


def values(task: str, payload: dict, shown: list[int]) -> dict[int, float]:
    """Validate `payload` against the candidates `shown` (ids in display order); return per-candidate values."""
    if not isinstance(payload, dict):
        raise JudgementError("the judgement must be an object")
    if task == "pairwise":
        if len(shown) != 2:
            raise JudgementError(f"a pairwise item needs exactly 2 candidates, this one has {len(shown)}")
        choice = payload.get("choice")
        if choice not in PAIRWISE_CHOICES:
            raise JudgementError(f"choose one of {', '.join(PAIRWISE_CHOICES)} (got {choice!r})")
        a, b = shown
        return {"A": {a: 1, b: 2}, "B": {a: 2, b: 1}, "tie": {a: 1, b: 1}, "both_bad": {a: 2, b: 2}}[choice]
    if task == "ranking":
        ranking = payload.get("ranking")
        if not isinstance(ranking, list) or not all(isinstance(c, int) for c in ranking):
            raise JudgementError("'ranking' must be a list of candidate ids, best first")
        if len(set(ranking)) != len(ranking):
            raise JudgementError("each candidate may have only one rank (the ranking repeats a candidate)")
        if set(ranking) != set(shown):
            raise JudgementError(f"rank all {len(shown)} candidates of this item, each exactly once")
        return {c: i + 1 for i, c in enumerate(ranking)}
    if task == "likert":
        scores = payload.get("scores")
        if not isinstance(scores, dict):
            raise JudgementError("'scores' must map each candidate id to a score")
        try:
            scores = {int(k): v for k, v in scores.items()}
        except (TypeError, ValueError):
            raise JudgementError("'scores' keys must be candidate ids") from None
        if set(scores) != set(shown):
            raise JudgementError(f"score all {len(shown)} candidates of this item")
        for c, v in scores.items():
            if not isinstance(v, int) or isinstance(v, bool) or not LIKERT_MIN <= v <= LIKERT_MAX:
                raise JudgementError(
                    f"scores are whole numbers {LIKERT_MIN}..{LIKERT_MAX} (candidate {c}: {v!r})"
                )
        return {c: float(v) for c, v in scores.items()}
    if task == "review":
        decision = payload.get("decision")
        if decision not in REVIEW_DECISIONS:
            raise JudgementError(f"decide keep or drop (got {decision!r})")
        if len(shown) != 1:
            raise JudgementError(f"a review item has one row, this one has {len(shown)}")
        return {shown[0]: 1.0 if decision == "keep" else 0.0}
    if task == "binary":
        label = payload.get("label")
        if label not in BINARY_LABELS:
            raise JudgementError(f"judge the answer good or bad (got {label!r})")
        if len(shown) != 1:
            raise JudgementError(f"a binary item has one answer, this one has {len(shown)}")
        return {shown[0]: 1.0 if label == "good" else 0.0}
    raise JudgementError(f"unknown task kind {task!r}; expected one of {', '.join(TASKS)}")


def stored_payload(task: str, payload: dict) -> dict:
    """The judgement as stored: the task's own key only (after `values` validated it), so nothing else a
    client adds to the payload reaches the store."""
    key = PAYLOAD_KEYS[task]
    return {key: payload[key]}


def preferences(
    task: str, vals: dict[int, float], *, mode: str = "all_pairs"
) -> tuple[list[tuple[int, int]], int]:
    """(better, worse) pairs implied by one judgement, and the count of tied pairs.

    Ranks: lower is better; likert scores: higher is better. `mode`: all_pairs | best_vs_others.
    """
    better_is_low = task != "likert"
    key = (lambda c: vals[c]) if better_is_low else (lambda c: -vals[c])
    ordered = sorted(vals, key=key)
    if mode == "best_vs_others":
        pairs_to_check = [(ordered[0], c) for c in ordered[1:]]
    elif mode == "all_pairs":
        pairs_to_check = list(combinations(ordered, 2))
    else:
        raise ValueError(f"unknown pairing mode {mode!r}")
    out, ties = [], 0
    for a, b in pairs_to_check:
        if vals[a] == vals[b]:
            ties += 1
        else:
            out.append((a, b) if key(a) < key(b) else (b, a))
    return out, ties
