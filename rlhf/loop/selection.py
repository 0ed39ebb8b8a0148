"""Active selection: which items go to people next. Pure functions, no I/O.

An item is a prompt with K candidates. A reward-model ensemble scores every candidate with each member;
each member's scores are first standardised over all candidates (z-scores: members trained apart sit on
different scales, and a member on a wider scale must not pose as disagreement); then for each pair of
candidates the members' margins (score difference) are compared:

- `disagreement`: the spread (standard deviation) of the members' margins, averaged over the item's pairs —
  the members disagree on which candidate is better, so a human label teaches the next reward model most;
- `uncertainty`: Bradley-Terry uncertainty of the ensemble's mean margin, 1 - |2 sigmoid(m) - 1|, averaged
  over pairs — the two candidates look equally good;
- `random`: a seeded random choice, the baseline to compare against.
"""

from __future__ import annotations

import math
import random
import statistics
from itertools import combinations
from typing import Literal

Selection = Literal["disagreement", "uncertainty", "random"]


def item_margins(member_scores: list[list[float]]) -> list[list[float]]:
    """member_scores[m][c]: member m's score of candidate c. Returns [pair][member] margins."""
    k = len(member_scores[0])
    return [[s[a] - s[b] for s in member_scores] for a, b in combinations(range(k), 2)]


def disagreement(member_scores: list[list[float]]) -> float:
    return statistics.fmean(statistics.pstdev(m) for m in item_margins(member_scores))


def uncertainty(member_scores: list[list[float]]) -> float:
    def u(margins: list[float]) -> float:
        p = 1.0 / (1.0 + math.exp(-statistics.fmean(margins)))
        return 1.0 - abs(2.0 * p - 1.0)

    return statistics.fmean(u(m) for m in item_margins(member_scores))


def standardized(member_scores: list[list[list[float]]]) -> list[list[list[float]]]:
    """[item][member][candidate] scores -> each member's z-scores over all its scores (a constant member
    becomes all zeros)."""
    members = len(member_scores[0])
    out = [[list(m) for m in item] for item in member_scores]
    for m in range(members):
        values = [x for item in member_scores for x in item[m]]
        mean, sd = statistics.fmean(values), statistics.pstdev(values)
        for item in out:
            item[m] = [(x - mean) / sd if sd > 0 else 0.0 for x in item[m]]
    return out


def select(
    member_scores: list[list[list[float]]], n: int, *, method: Selection, seed: int = 0
) -> tuple[list[int], list[float]]:
    """member_scores[i][m][c] for item i. Returns the indices of the `n` items chosen (most informative
    first; seeded random order for `random`) and every item's informativeness on the members' standardised
    scores (0 for `random`)."""
    count = len(member_scores)
    n = min(n, count)
    if method == "random":
        return random.Random(seed).sample(range(count), n), [0.0] * count
    measure = disagreement if method == "disagreement" else uncertainty
    values = [measure(s) for s in standardized(member_scores)]
    rng = random.Random(seed)
    jitter = [rng.random() for _ in range(count)]  # seeded tie-break, so equal items are not taken in order
    order = sorted(range(count), key=lambda i: (-values[i], jitter[i]))
    return order[:n], values


def regroup(flat: list[list[float]], k: int) -> list[list[list[float]]]:
    """flat[m][i*k + c] (members' scores over all candidates, item-major) -> [item][member][candidate]."""
    items = len(flat[0]) // k
    return [[row[i * k : (i + 1) * k] for row in flat] for i in range(items)]
