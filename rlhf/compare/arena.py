"""The private blind arena: pairwise battles between checkpoints' answers, judged by your assessors in the
labeling app, and the leaderboard fitted on their votes.

- `open_arena`: a new pairwise labeling project holding the battles (`ArenaSettings`, the stage's `arena:`).
- `battle_items`: for each prompt, pairs of checkpoints taken round-robin over all pairs (so every pair gets
  the same number of battles, +-1), sides randomised; each candidate's source names its checkpoint, which
  the app hides until the vote (arena mode reveals it afterwards).
- `battles_from_votes`: pairwise judgements -> (i, j, score) battles; "tie" and "both bad" are ties.
- `leaderboard`: Bradley-Terry ratings with bootstrap CIs, P(best), and the votes per pair.
The votes are an ordinary pairwise project: `rlhf export project=<arena>` turns them into preference rows
for the next reward model.
"""

from __future__ import annotations

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
    """Create the arena's pairwise project in the store and add the battles between the checkpoints
    (`answers`: name -> answer per prompt)."""
    a = settings
    items = battle_items(
        list(answers), prompts, prompt_ids, answers, per_prompt=a.battles_per_prompt, seed=seed
    )
    with Store(a.store) as store:
        store.create_project(
            a.project, "pairwise", overlap=a.overlap, guidelines=a.guidelines, rationale="optional"
        )
        added = store.add_items(a.project, items, seed=seed)
    return ArenaBattles(
        a.project, a.store, added, serve=f"rlhf label store={a.store} project={a.project} arena=true"
    )


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
    pairs = list(combinations(range(len(names)), 2))
    rng = random.Random(seed)
    items, k = [], 0
    for p, (pid, prompt) in enumerate(zip(prompt_ids, prompts, strict=True)):
        for _ in range(min(per_prompt, len(pairs))):
            i, j = pairs[k % len(pairs)]
            k += 1
            if rng.random() < 0.5:
                i, j = j, i
            items.append(
                {
                    "external_id": f"{pid}:{names[i]}~{names[j]}",
                    "prompt": prompt,
                    "candidates": [
                        {"text": answers[names[i]][p], "source": {"policy": names[i], "arena": True}},
                        {"text": answers[names[j]][p], "source": {"policy": names[j], "arena": True}},
                    ],
                    "meta": {"prompt_id": pid, "battle": [names[i], names[j]]},
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
