"""Simulated assessors, for demos, tests and research: N assessors backed by a reward model (or any reward
function: the taste), voting through the same store API the labeling app uses — so overlap, leases,
agreement statistics and export run exactly as with people.

Like people, they are noisy in proportion to how close a call is (Bradley-Terry / Plackett-Luce): assessor
k prefers a over b with P = sigmoid((s_a - s_b) / temperature_k), where s is the taste's score plus the
assessor's own bias (`length_bias` per 100 words: some like long answers, some short), and a share
`careless` of their votes is random. A ranking is one Plackett-Luce draw (the Gumbel-max trick: sort
s / temperature + Gumbel noise), whose pairwise margins are exactly those probabilities; Likert maps the
perturbed scores onto 1..7 within the item. A binary judgement (good / bad on one answer) compares the
answer with the project's median answer by the same rule: P(good) = sigmoid((s - median) / temperature),
so about half of the answers are good to a careful assessor. `agreement_rate` measures how often two
assessors order a pair of candidates the same way (or give an answer the same label) — people agree on
~65-75 % of HH-RLHF pairs.
"""

from __future__ import annotations

import math
import random
import re
import secrets
import statistics
from dataclasses import dataclass
from itertools import combinations

from rlhf.config import bounded, documented
from rlhf.store import Store, StoreError, answer


@dataclass
class SimulatedAssessor:
    name: str | None = documented(None, help="the store username the assessor votes as (default sim-<k>)")
    temperature: float = bounded(
        1.0,
        gt=0,
        help="P(a over b) = sigmoid((s_a - s_b) / temperature), in the taste's units: lower is surer",
    )
    length_bias: float = bounded(
        0.0, help="added to an answer's score per 100 words (> 0: likes long answers)"
    )
    careless: float = bounded(0.0, ge=0, le=1, help="share of votes cast at random")


def perceived(
    assessor: SimulatedAssessor, scores: list[float], texts: list[str], rng: random.Random
) -> list[float]:
    """The assessor's noisy view of the candidates: (taste + own bias) / temperature + Gumbel noise; sorting
    it is one Plackett-Luce draw, so P(a above b) = sigmoid((s_a - s_b) / temperature) for two candidates.
    A careless vote sees noise only."""
    careless = rng.random() < assessor.careless
    out = []
    for s, t in zip(scores, texts, strict=True):
        biased = s + assessor.length_bias * len(t.split()) / 100
        gumbel = -math.log(-math.log(rng.random() or 1e-300))
        out.append(gumbel if careless else biased / assessor.temperature + gumbel)
    return out


def judgement(task: str, candidate_ids: list[int], scores: list[float]) -> dict:
    """The payload a store submit takes, from (perceived) scores of the candidates in the order shown;
    binary: [the answer's, the threshold's] (good when the answer's is higher)."""
    if task == "binary":
        answer, threshold = scores
        return {"label": "good" if answer > threshold else "bad"}
    if task == "pairwise":
        a, b = scores
        return {"choice": "A" if a > b else "B"}
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
    raise ValueError(f"simulated assessors judge pairwise, ranking, likert and binary projects, not {task!r}")


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
    threshold = _median_taste(store.items(project), reward) if task == "binary" else None
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
            taste = reward([lease.prompt] * len(texts), texts)
            if (
                threshold is not None
            ):  # binary: the answer against the median answer (no text: no length bias)
                taste, texts = [*taste, threshold], [*texts, ""]
            payload = judgement(task, [c["id"] for c in lease.candidates], perceived(a, taste, texts, rng))
            try:
                store.submit(project, a.name, lease.item_id, payload, client_token=secrets.token_hex(16))
            except StoreError:
                failed[a.name] += 1  # e.g. the lease expired meanwhile: the queue decides what comes next
                if failed[a.name] > 3:
                    raise
                continue
            done[a.name] += 1
    return done


def _median_taste(items: list[dict], reward) -> float:
    """The taste's median over every answer of a project (the binary judgements' threshold)."""
    prompts = [it["prompt"] for it in items for _ in it["candidates"]]
    scores = sorted(reward(prompts, [c["text"] for it in items for c in it["candidates"]]))
    return statistics.median(scores) if scores else 0.0


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


def agreement_rate(annotations: list[dict]) -> tuple[float | None, int]:
    """How often two assessors who judged the same item agree, over every pair of their judgements, per
    *pair of candidates*: the same order of the two (pairwise, ranking, likert; a pair either of them left
    tied is not counted), or the same label (binary: one unit per item). For a pairwise task this is
    agreement on the choice, so the figure means the same for 2-way and K-way items and compares with
    people's ~65-75 % on HH-RLHF pairs. Returns (rate, units); (None, 0) when nothing was judged twice. Pure."""
    by_item: dict[int, list[dict]] = {}
    for a in annotations:
        by_item.setdefault(a["item_id"], []).append(a)
    same = []
    for votes in by_item.values():
        for x, y in combinations(votes, 2):
            if x["kind"] == "binary":
                if answer(x) is not None and answer(y) is not None:
                    same.append(answer(x) == answer(y))
                continue
            shared = sorted(set(x["values"]) & set(y["values"]))
            for c, d in combinations(shared, 2):
                ox = x["values"][c] - x["values"][d]
                oy = y["values"][c] - y["values"][d]
                if ox and oy:
                    same.append((ox > 0) == (oy > 0))
    return (sum(same) / len(same), len(same)) if same else (None, 0)


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
