"""The private blind arena: pairwise battles between checkpoints' answers, judged by your assessors in the
labeling app, and the leaderboard fitted on their votes.

- `open_arena`: the pairwise labeling project holding the battles (`ArenaSettings`, the stage's `arena:`),
  created on the first run and reused after: a re-run (or a resume after a kill) adds only the battles
  that are not there yet, so none is added twice.
- `battle_items`: each prompt gets `per_prompt` distinct pairs of checkpoints drawn at random (seeded) among
  the pairs used least so far — every pair gets the same number of battles, +-1, and which prompt a pair
  meets is random, not fixed by the prompt's position; sides randomised. Each candidate's source names
  its checkpoint, which the app hides until the vote (arena mode reveals it afterwards). A battle's
  external id is stable: the prompt id, the two checkpoint names (sorted) and a hash of the two answers —
  the same battle on a re-run has the same id; a checkpoint retrained under the same name (other answers)
  gets new battles, whose votes then join the old ones under that name (use a new name or project to
  keep them apart).
- `battles_from_votes`: pairwise judgements -> (i, j, score) battles; "tie" and "both bad" are ties.
- `leaderboard`: Bradley-Terry ratings with bootstrap CIs, P(best), and the votes per pair.
The votes are an ordinary pairwise project: `rlhf export project=<arena>` turns them into preference rows
for the next reward model.
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from rlhf.compare.bradley_terry import ratings
from rlhf.compare.result import ArenaBattles
from rlhf.config import bounded, documented
from rlhf.store import Store


@dataclass
class ArenaSettings:
    project: str | None = documented(None, help="a new pairwise project for the blind arena; null: none")
    store: str = "labels.db"
    battles_per_prompt: int = bounded(1, ge=1)
    overlap: int = bounded(1, ge=1)
    guidelines: str = (
        "Pick the better answer to the request. Which model wrote which is hidden until you vote."
    )


def open_arena(
    settings: ArenaSettings, prompts: list, prompt_ids: list[str], answers: dict[str, list[str]], *, seed: int
) -> ArenaBattles:
    """Create (or reopen) the arena's pairwise project in the store and add the battles between the
    checkpoints (`answers`: name -> answer per prompt) that it does not hold yet."""
    a = settings
    items = battle_items(
        list(answers), prompts, prompt_ids, answers, per_prompt=a.battles_per_prompt, seed=seed
    )
    with Store(a.store) as store:
        store.create_project(
            a.project,
            "pairwise",
            overlap=a.overlap,
            guidelines=a.guidelines,
            rationale="optional",
            exist_ok=True,
        )
        there = {it["external_id"] for it in store.items(a.project)}
        new = [it for it in items if it["external_id"] not in there]
        added = store.add_items(a.project, new, seed=seed) if new else 0
    return ArenaBattles(
        a.project,
        a.store,
        added,
        serve=f"rlhf label store={a.store} project={a.project} arena=true",
        existing=len(items) - len(new),
    )


def assign_pairs(prompts: int, checkpoints: int, per_prompt: int, rng: random.Random) -> list[list[tuple]]:
    """For each prompt, `per_prompt` distinct pairs of checkpoints: at random among the pairs used least so
    far, so that every pair gets the same number of battles (+-1)."""
    pairs = list(combinations(range(checkpoints), 2))
    used = Counter()
    out = []
    for _ in range(prompts):
        chosen = sorted(pairs, key=lambda pr: (used[pr], rng.random()))[: min(per_prompt, len(pairs))]
        used.update(chosen)
        out.append(chosen)
    return out


def battle_id(prompt_id: str, name_a: str, answer_a: str, name_b: str, answer_b: str) -> str:
    """A battle's external id: the same for the same prompt, checkpoints and answers, in either order."""
    (na, ta), (nb, tb) = sorted([(name_a, answer_a), (name_b, answer_b)])
    digest = hashlib.sha256(f"{ta}\0{tb}".encode()).hexdigest()[:12]
    return f"{prompt_id}:{na}~{nb}:{digest}"


def battle_items(
    names: list[str],
    prompts: list,
    prompt_ids: list[str],
    answers: dict[str, list[str]],
    *,
    per_prompt: int,
    seed: int,
) -> list[dict]:
    """Store items {external_id, prompt, candidates, meta} for the battles."""
    rng = random.Random(seed)
    assigned = assign_pairs(len(prompts), len(names), per_prompt, rng)
    items = []
    for p, (pid, prompt) in enumerate(zip(prompt_ids, prompts, strict=True)):
        for i, j in assigned[p]:
            if rng.random() < 0.5:
                i, j = j, i
            a, b = names[i], names[j]
            items.append(
                {
                    "external_id": battle_id(pid, a, answers[a][p], b, answers[b][p]),
                    "prompt": prompt,
                    "candidates": [
                        {"text": answers[a][p], "source": {"policy": a, "arena": True}},
                        {"text": answers[b][p], "source": {"policy": b, "arena": True}},
                    ],
                    "meta": {"prompt_id": pid, "battle": [a, b]},
                }
            )
    return items


def battles_from_votes(
    items: list[dict], annotations: list[dict]
) -> tuple[list[str], list[tuple[int, int, float]]]:
    """(checkpoint names, battles) from a pairwise project's items and annotations (`Store.items`,
    `Store.annotations`). Items whose candidates carry no checkpoint (`source.policy`) are skipped."""
    policy = {c["id"]: (c.get("source") or {}).get("policy") for it in items for c in it["candidates"]}
    names = sorted({p for p in policy.values() if p})
    index = {n: i for i, n in enumerate(names)}
    battles = []
    for a in annotations:
        vals = a["values"]  # candidate id -> rank (1 = preferred; a tie shares the rank)
        if len(vals) != 2:
            continue
        (ca, ra), (cb, rb) = sorted(vals.items())
        if policy.get(ca) is None or policy.get(cb) is None or policy[ca] == policy[cb]:
            continue
        score = 0.5 if ra == rb else float(ra < rb)
        battles.append((index[policy[ca]], index[policy[cb]], score))
    return names, battles


def leaderboard(items: list[dict], annotations: list[dict], *, bootstrap: int = 1000, seed: int = 0) -> dict:
    names, battles = battles_from_votes(items, annotations)
    if len(names) < 2:
        return {"checkpoints": [], "battles": 0, "votes_per_pair": {}}
    # human votes are independent: the bootstrap resamples them one by one (no groups)
    fit = ratings(battles, len(names), bootstrap=bootstrap, seed=seed)
    per_pair = Counter(tuple(sorted((names[i], names[j]))) for i, j, _ in battles)
    rows = [
        {"checkpoint": n, "rating": fit["rating"][k], "ci95": fit["ci95"][k], "p_best": fit["p_best"][k]}
        for k, n in enumerate(names)
    ]
    rows.sort(key=lambda r: -r["rating"])
    return {
        "checkpoints": rows,
        "battles": len(battles),
        "votes_per_pair": {f"{a} vs {b}": n for (a, b), n in sorted(per_pair.items())},
    }


def table(board: dict) -> str:
    """The leaderboard as aligned text."""
    if not board["checkpoints"]:
        return "no battles with two different checkpoints have been judged yet"
    lines = [f"{'rank':4s}  {'checkpoint':24s}  {'rating':>7s}  {'95% CI':>15s}  {'P(best)':>7s}"]
    for k, r in enumerate(board["checkpoints"], start=1):
        lo, hi = r["ci95"]
        lines.append(
            f"{k:<4d}  {r['checkpoint']:24s}  {r['rating']:7.0f}  {lo:7.0f}–{hi:<7.0f}  {r['p_best']:7.2f}"
        )
    lines.append(
        f"{board['battles']} votes; per pair: "
        + ", ".join(f"{k}: {v}" for k, v in board["votes_per_pair"].items())
    )
    return "\n".join(lines)
