"""Simulated assessors, for demos, tests and research: N assessors backed by a reward model (or any reward
function), each with its own noise level, voting through the same store API the labeling app uses — so
overlap, leases, agreement statistics and export run exactly as with people.

An assessor scores an item's candidates with the reward (plus Gaussian noise of `noise` standard
deviations of the item's scores, their own taste), then answers the project's task: pairwise picks the
higher (a tie within `tie_eps`), ranking orders all, Likert maps scores onto 1..7 within the item, review
keeps a row whose score is above `keep_above`.
"""

from __future__ import annotations

import random
import re
import secrets
import statistics
from dataclasses import dataclass

from rlhf.config import bounded
from rlhf.store import Store, StoreError


@dataclass
class SimulatedAssessor:
    name: str
    noise: float = bounded(0.3, ge=0)  # in standard deviations of the item's candidate scores


def judgement(task: str, candidate_ids: list[int], scores: list[float], *, tie_eps: float = 0.0) -> dict:
    """The payload a store submit takes, from (noisy) scores of the candidates in the order shown."""
    if task == "pairwise":
        a, b = scores
        return {"choice": "tie" if abs(a - b) <= tie_eps else ("A" if a > b else "B")}
    if task == "ranking":
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        return {"ranking": [candidate_ids[i] for i in order]}
    if task == "likert":
        lo, hi = min(scores), max(scores)
        span = (hi - lo) or 1.0
        return {
            "scores": {
                str(c): 1 + round(6 * (s - lo) / span) for c, s in zip(candidate_ids, scores, strict=True)
            }
        }
    raise ValueError(f"simulated assessors judge pairwise, ranking and likert projects, not {task!r}")


def vote(
    store: Store,
    project: str,
    assessors: list[SimulatedAssessor],
    reward,
    *,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, int]:
    """The assessors take turns, one item each per turn, until the queue has nothing left for any of them
    (or each made `limit` judgements). `reward(prompts, responses) -> scores`. Returns the judgements made
    per assessor."""
    task = store.project(project).task
    rng = random.Random(seed)
    known = {u["username"] for u in store.list_users()}
    for a in assessors:
        if a.name not in known:
            store.add_user(a.name, secrets.token_urlsafe(16))
    done = {a.name: 0 for a in assessors}
    failed = {a.name: 0 for a in assessors}
    active = list(assessors)
    while active:
        for a in list(active):
            lease = store.next_item(project, a.name) if limit is None or done[a.name] < limit else None
            if lease is None:
                active.remove(a)
                continue
            texts = [c["text"] for c in lease.candidates]
            clean = reward([lease.prompt] * len(texts), texts)
            spread = statistics.pstdev(clean) or 1.0
            noisy = [s + rng.gauss(0, a.noise * spread) for s in clean]
            payload = judgement(task, [c["id"] for c in lease.candidates], noisy)
            try:
                store.submit(project, a.name, lease.item_id, payload, client_token=secrets.token_hex(16))
            except StoreError:
                failed[a.name] += 1  # e.g. the lease expired meanwhile: the queue decides what comes next
                if failed[a.name] > 3:
                    raise
                continue
            done[a.name] += 1
    return done


_WORD = re.compile(r"[a-z']+")
_STOP = frozenset(
    "a an the of to in on for and or is are was be it i you my me your what how why can do".split()
)


def _last_user_text(prompt) -> str:
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return str(prompt)


def demo_preference(prompts: list, responses: list) -> list[float]:
    """The demo's stand-in for people: a transparent taste, not a model of quality. It prefers answers
    that take up the prompt's words, finish their last sentence, stay near 40 words, and do not repeat
    themselves. Real rounds use your assessors (or a reward model trained on their labels)."""
    out = []
    for prompt, response in zip(prompts, responses, strict=True):
        asked = {w for w in _WORD.findall(_last_user_text(prompt).lower()) if w not in _STOP}
        words = _WORD.findall(response.lower())
        on_topic = len(asked & set(words)) / len(asked) if asked else 0.0
        finished = 1.0 if response.rstrip().endswith((".", "!", "?")) else 0.0
        trigrams = list(zip(words, words[1:], words[2:], strict=False))
        repeats = 1.0 - len(set(trigrams)) / len(trigrams) if trigrams else 0.0
        length = min(1.0, abs(len(words) - 40) / 40)
        out.append(2.0 * on_topic + finished - 2.0 * repeats - length)
    return out


def progress(items: list[dict], annotations: list[dict], overlap: int) -> dict:
    """How far a project's labeling is: items with `overlap` judgements (gold items left out)."""
    judged: dict[int, set] = {}
    for a in annotations:
        judged.setdefault(a["item_id"], set()).add(a["assessor"])
    real = [it for it in items if not it.get("is_gold")]
    complete = sum(1 for it in real if len(judged.get(it["id"], ())) >= overlap)
    return {
        "items": len(real),
        "complete": complete,
        "share": complete / len(real) if real else 0.0,
        "judgements": len(annotations),
    }
