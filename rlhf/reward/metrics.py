"""Reward-model QA metrics. Pure functions over plain lists — no model, no I/O.

Inputs are per held-out pair: r_chosen, r_rejected (the RM's scalar rewards), and the two responses'
lengths. Definitions:
- accuracy: share of pairs with r_chosen > r_rejected (an exact tie counts 1/2);
- accuracy CI: percentile-bootstrap interval of the accuracy over resamples of the pairs (seeded;
  `rlhf.stats.bootstrap`, the one bootstrap of every interval);
- calibration: every pair is read in both orientations, p = σ(r_a − r_b) with label 1 when a is the
  chosen one; p is binned into `bins` equal-width bins; each bin reports mean p, observed frequency and
  count; ECE = Σ count/N · |freq − mean p|;
- length baseline: "the longer response wins" accuracy (equal lengths count 1/2), and the Pearson
  correlation of reward with length over all responses;
- grouped accuracy: accuracy per value of a column (assessor, slice);
- human ceiling: on items judged by several assessors, the share of votes that agree with the item's
  majority (leave-one-out), the best accuracy a model can expect against single votes.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Hashable, Sequence

import numpy as np

from rlhf.stats import bootstrap
from rlhf.store import majority


def pair_correct(rc: float, rr: float) -> float:
    return 1.0 if rc > rr else 0.5 if rc == rr else 0.0


def accuracy(r_chosen: Sequence[float], r_rejected: Sequence[float]) -> float:
    if not r_chosen:
        raise ValueError("accuracy of no pairs")
    return sum(pair_correct(c, r) for c, r in zip(r_chosen, r_rejected, strict=True)) / len(r_chosen)


def accuracy_ci(
    r_chosen: Sequence[float],
    r_rejected: Sequence[float],
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the accuracy, the pairs resampled (`rlhf.stats.bootstrap`)."""
    if len(r_chosen) == 0:
        raise ValueError("accuracy of no pairs")
    correct = np.array([pair_correct(c, r) for c, r in zip(r_chosen, r_rejected, strict=True)])
    ci = bootstrap(lambda idx: correct[idx].mean(), len(correct), resamples=resamples, level=level, seed=seed)
    return ci.low, ci.high


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def calibration(r_chosen: Sequence[float], r_rejected: Sequence[float], *, bins: int = 10) -> dict:
    """Reliability diagram data of σ(r_a − r_b) over both orientations of every pair, and the ECE."""
    points = []
    for c, r in zip(r_chosen, r_rejected, strict=True):
        points.append((sigmoid(c - r), 1.0))
        points.append((sigmoid(r - c), 0.0))
    table = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = [(p, y) for p, y in points if lo <= p < hi or (b == bins - 1 and p == 1.0)]
        if inside:
            table.append(
                {
                    "bin": [lo, hi],
                    "mean_p": sum(p for p, _ in inside) / len(inside),
                    "freq": sum(y for _, y in inside) / len(inside),
                    "count": len(inside),
                }
            )
    total = len(points)
    ece = sum(t["count"] / total * abs(t["freq"] - t["mean_p"]) for t in table) if total else 0.0
    return {"bins": table, "ece": ece}


def length_baseline(len_chosen: Sequence[int], len_rejected: Sequence[int]) -> float:
    return accuracy([float(x) for x in len_chosen], [float(x) for x in len_rejected])


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / math.sqrt(sxx * syy)


def grouped_accuracy(groups: Sequence[Hashable | None], correct: Sequence[float]) -> dict:
    """{group: {"pairs": n, "accuracy": a}} for the pairs whose group is not None."""
    acc: dict = defaultdict(list)
    for g, c in zip(groups, correct, strict=True):
        if g is not None:
            acc[g].append(c)
    return {
        g: {"pairs": len(v), "accuracy": sum(v) / len(v)}
        for g, v in sorted(acc.items(), key=lambda kv: str(kv[0]))
    }


def human_ceiling(votes: Sequence[tuple[Hashable, Hashable, Hashable]]) -> dict | None:
    """votes: (item, assessor, preferred response key). Leave-one-out agreement with the item majority.

    Returns {"votes_compared", "agreement"} over items with at least 2 votes, or None when there are none.
    """
    by_item: dict = defaultdict(dict)
    for item, who, pick in votes:
        by_item[item].setdefault(who, pick)  # one vote per assessor and item (the first row of a k-wise vote)
    by_item = {item: list(v.values()) for item, v in by_item.items()}
    agree = compared = 0
    for picks in by_item.values():
        if len(picks) < 2:
            continue
        for i, pick in enumerate(picks):
            top = majority(picks[:i] + picks[i + 1 :])
            if top is None:
                continue  # the others tie: no majority to agree with
            compared += 1
            agree += pick == top
    return {"votes_compared": compared, "agreement": agree / compared} if compared else None


def ensemble_accuracy(chosen: Sequence[Sequence[float]], rejected: Sequence[Sequence[float]]) -> dict:
    """chosen[m][i] / rejected[m][i]: member m's scores of pair i. Held-out accuracy of each member and of
    the members' mean, and the mean spread (std over members) of the chosen-minus-rejected margin."""
    margins = [[c - r for c, r in zip(cs, rs, strict=True)] for cs, rs in zip(chosen, rejected, strict=True)]
    per_pair = list(zip(*margins, strict=True))
    zeros = [0.0] * len(per_pair)
    return {
        "members": len(margins),
        "member_accuracy": [accuracy(m, zeros) for m in margins],
        "mean_accuracy": accuracy([statistics.fmean(p) for p in per_pair], zeros),
        "mean_margin_spread": statistics.fmean(statistics.pstdev(p) for p in per_pair),
    }
