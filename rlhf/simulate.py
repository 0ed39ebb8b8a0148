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
import secrets
import statistics
from dataclasses import dataclass

from rlhf.config import bounded
from rlhf.store.service import Store, StoreError


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
    """Each assessor takes items from the queue until none is left for them (or `limit`), judging each.
    `reward(prompts, responses) -> scores`. Returns the judgements made per assessor."""
    task = store.project(project).task
    rng = random.Random(seed)
    done: dict[str, int] = {}
    for a in assessors:
        if a.name not in {u["username"] for u in store.list_users()}:
            store.add_user(a.name, secrets.token_urlsafe(16))
        done[a.name] = 0
        while limit is None or done[a.name] < limit:
            lease = store.next_item(project, a.name)
            if lease is None:
                break
            texts = [c["text"] for c in lease.candidates]
            clean = reward([lease.prompt] * len(texts), texts)
            spread = statistics.pstdev(clean) or 1.0
            noisy = [s + rng.gauss(0, a.noise * spread) for s in clean]
            payload = judgement(task, [c["id"] for c in lease.candidates], noisy)
            try:
                store.submit(project, a.name, lease.item_id, payload, client_token=secrets.token_hex(16))
            except StoreError:
                continue  # e.g. the lease expired meanwhile: the queue decides what comes next
            done[a.name] += 1
    return done
