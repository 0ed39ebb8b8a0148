"""What a round's verdict rests on (pure): evidence that no model was trained on.

- `promotion`: the new policy becomes the best when the lower bound of the 95 % interval of its evidence
  clears `promote_above` and its estimate is at least the best's. Evidence `human` (the default): the share
  of the held-out human slice the policy orders like the humans by its implicit reward, each policy
  against its own reference; `reward_model`: its win rate over the best by a reward model trained on every
  label but the slice; `arena`: its share of the blind arena's votes against the best (`head_to_head`,
  a tie counts one half; the interval resamples prompts, whose votes share answers). The verdict names
  its evidence and its strength.
- `arena_votes`: the arena's judgements of new against best, kept only where the battle's two answers are
  the ones this comparison produced (votes on a retrained checkpoint's older answers do not count).
- `oracle_win_rate`: with simulated assessors the taste is known, so the share of held-out prompts on which
  the taste prefers the round's policy over the start — the truth the other evidence estimates.
- `candidates_hash`: what a round's project holds (prompts and candidate texts), for its version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from rlhf.stats import bootstrap


@dataclass
class Verdict:
    promoted: bool
    evidence: str  # what it rests on, in words
    estimate: float | None
    ci95: list[float] | None
    n: int
    best_estimate: float | None
    text: str


def _human(result, name: str):
    agreement = (result.human_agreement or {}).get(name)
    return agreement.implicit_reward if agreement is not None else None


def promotion(
    promote_on: str, promote_above: float, result, best: str, new: str, arena: dict | None = None
) -> Verdict:
    """The rule in the module docstring, on a `CompareResult` of (at least) best and new (and, for
    `arena`, `head_to_head` of their arena votes)."""
    if promote_on == "arena":
        if not arena or not arena["n"]:
            return Verdict(
                False,
                "arena",
                None,
                None,
                0,
                None,
                f"{new}: no arena votes against {best} — {best} stays the best",
            )
        est, ci, n, best_est = arena["rate"], arena["ci95"], arena["n"], 0.5
        what = f"blind arena votes against {best} ({arena['prompts']} held-out prompts)"
        verb = "wins"
    elif promote_on == "human":
        mine, theirs = _human(result, new), _human(result, best)
        what = "held-out human pairs"
        if mine is None:
            return Verdict(
                False,
                "human slice",
                None,
                None,
                0,
                None,
                f"{new}: no held-out human pairs to judge it on yet — {best} stays the best",
            )
        est, ci, n = mine.rate, mine.ci95, mine.n
        best_est = theirs.rate if theirs is not None else None
        verb = "agrees with"
    else:
        vs = result.checkpoints[new].vs_baseline
        if vs is None:
            return Verdict(
                False,
                "reward model",
                None,
                None,
                0,
                None,
                f"{new}: no reward-model battles — {best} stays the best",
            )
        est, ci, n, best_est = vs.win_rate, vs.win_rate_ci95, result.prompts, 0.5
        what, verb = f"reward-model battles against {best}", "wins"
    promoted = ci[0] > promote_above and (best_est is None or est >= best_est)
    against = f" vs {best_est:.0%} for {best}" if best_est is not None and promote_on == "human" else ""
    outcome = (
        "promoted"
        if promoted
        else (
            f"not promoted (the interval's lower bound {ci[0]:.0%} does not clear {promote_above:.0%})"
            if ci[0] <= promote_above
            else f"not promoted ({best} does better)"
        )
    )
    text = f"{new} {verb} {est:.0%} [{ci[0]:.0%}, {ci[1]:.0%}] of {n} {what}{against} — {outcome}"
    evidence = {
        "human": "human slice",
        "arena": "blind arena votes",
        "reward_model": "reward model (trained without the slice)",
    }[promote_on]
    return Verdict(promoted, evidence, est, list(ci), n, best_est, text)


def oracle_win_rate(new: list[float], start: list[float], *, seed: int = 0, resamples: int = 1000) -> dict:
    """Share of prompts where the taste scores `new` above `start` (a tie counts one half), with a
    bootstrap interval over prompts."""
    wins = np.array([0.5 if a == b else float(a > b) for a, b in zip(new, start, strict=True)])
    fit = bootstrap(lambda idx: wins[idx].mean(), len(wins), resamples=resamples, seed=seed)
    return {"rate": float(wins.mean()), "ci95": [float(fit.low), float(fit.high)], "n": len(wins)}


def candidates_hash(items: list[dict]) -> str:
    content = [[it["prompt"], [c["text"] for c in it["candidates"]]] for it in items]
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def arena_votes(
    items: list[dict], annotations: list[dict], answers: dict[str, dict[str, str]], new: str, best: str
) -> list[tuple[str, float]]:
    """(prompt, the new policy's score: 1 won, 0.5 tie, 0 lost) for every arena judgement of new against
    best whose two answers are `answers[prompt][name]` (the comparison's own; prompt as JSON text). Pure."""
    by_id = {it["id"]: it for it in items}
    out = []
    for a in annotations:
        it = by_id.get(a["item_id"])
        ranks = a.get("values") or {}
        if it is None or len(ranks) != 2:
            continue
        key = json.dumps(it["prompt"], sort_keys=True, ensure_ascii=False)
        side = {(c.get("source") or {}).get("policy"): c for c in it["candidates"]}
        if set(side) != {new, best} or any(
            side[name]["text"] != answers.get(key, {}).get(name) for name in (new, best)
        ):
            continue
        mine, theirs = ranks.get(side[new]["id"]), ranks.get(side[best]["id"])
        if mine is None or theirs is None:
            continue
        out.append((key, 0.5 if mine == theirs else float(mine < theirs)))
    return out


def head_to_head(votes: list[tuple[str, float]], *, seed: int = 0, resamples: int = 1000) -> dict:
    """The share of `votes` (prompt, score) the new policy won, with a bootstrap interval that resamples
    prompts (the votes on one prompt's battle share its answers). Pure."""
    if not votes:
        return {"rate": None, "ci95": None, "n": 0, "prompts": 0}
    scores = np.array([s for _, s in votes])
    groups = [p for p, _ in votes]
    fit = bootstrap(
        lambda idx: scores[idx].mean(), len(scores), resamples=resamples, seed=seed, groups=groups
    )
    return {
        "rate": float(scores.mean()),
        "ci95": [float(fit.low), float(fit.high)],
        "n": len(votes),
        "prompts": len(set(groups)),
    }
