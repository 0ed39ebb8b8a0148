"""What a round's verdict rests on (pure): evidence that no model was trained on.

- `promotion`: the new policy becomes the best when the lower bound of the 95 % interval of its evidence
  clears `promote_above` and its estimate is at least the best's. Evidence `human` (the default): the share
  of the held-out human slice the policy orders like the humans by its implicit reward, each policy
  against its own reference; `reward_model`: its win rate over the best by a reward model trained on every
  label but the slice. The verdict names its evidence and its strength.
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


def promotion(promote_on: str, promote_above: float, result, best: str, new: str) -> Verdict:
    """The rule in the module docstring, on a `CompareResult` of (at least) best and new."""
    if promote_on == "human":
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
    evidence = "human slice" if promote_on == "human" else "reward model (trained without the slice)"
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
