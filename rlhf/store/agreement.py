"""Assessor quality metrics: inter-annotator agreement, gold accuracy and throughput.

Pure functions only (no I/O): callers load labels from wherever they live and pass plain
mappings/iterables in. Throughout, ``units`` maps a unit (item) id to ``{coder (assessor) id: value}``.
A value of ``None`` (or a float NaN) is treated as missing, i.e. as if that coder had not answered.

Krippendorff's alpha (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability")
    Only *pairable* values count: those in units with at least 2 values; other units are ignored.
    Let n be the number of pairable values. The coincidence matrix is
    ``o_ck = sum_u (number of ordered pairs (c, k) of values from different coders in u) / (m_u - 1)``
    where m_u is the number of values in unit u, and ``n_c = sum_k o_ck`` (how often value c occurs).
    Then ``alpha = 1 - (n - 1) * sum_ck o_ck δ²_ck / sum_ck n_c n_k δ²_ck``, i.e. 1 - observed/expected
    disagreement, with the difference function δ² depending on the level of measurement:

    - nominal:  δ²_ck = 0 if c == k else 1
    - ordinal:  δ²_ck = (sum_{g=c..k} n_g - (n_c + n_k) / 2)², g running over the sorted distinct values
    - interval: δ²_ck = (c - k)²

    alpha is 1 for perfect agreement, ~0 for chance-level agreement and negative for systematic
    disagreement. It is *undefined* (0/0) when there are no pairable values or when the expected
    disagreement is 0 (every pairable value identical, so there is no variation to agree about):
    we return ``None`` then rather than guessing 1.0 or 0.0.

Majority agreement
    For each assessor and each unit they answered, the majority is taken over the *other*
    assessors' values only (leave-one-out), so an assessor's own vote never helps them agree.
    Units where the others tie, or where nobody else answered, are not compared.

Gold accuracy
    The share of an assessor's answers on gold (known-answer) items that equal the gold value.
    Every answer counts, so an assessor answering the same gold item twice is scored twice.

Throughput
    Per assessor, annotations are sorted by timestamp and the gaps between consecutive ones are summed
    into ``active_seconds``, skipping gaps longer than ``idle_gap_s`` (breaks). ``per_hour`` is
    ``annotations / (active_seconds / 3600)``; it is ``None`` when there is no active time (e.g. a single
    annotation). Time spent on the first annotation of each session is invisible to timestamps, so the
    rate slightly overstates speed for assessors who work in many short sessions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from itertools import accumulate, pairwise, permutations
from typing import TypedDict

LEVELS = ("nominal", "ordinal", "interval")

Units = Mapping[Hashable, Mapping[Hashable, Hashable | float]]


class MajorityAgreement(TypedDict):
    compared: int
    agree: int
    rate: float | None


class GoldAccuracy(TypedDict):
    gold_seen: int
    correct: int
    accuracy: float | None


class Throughput(TypedDict):
    annotations: int
    active_seconds: float
    per_hour: float | None


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _present(votes: Mapping[Hashable, Hashable | float]) -> dict[Hashable, Hashable | float]:
    return {coder: v for coder, v in votes.items() if not _is_missing(v)}


def _delta2(level: str, marginals: Mapping[Hashable, float]) -> Callable[[Hashable, Hashable], float]:
    """The squared difference function δ²(c, k) for ``level``, given the value counts n_c."""
    if level == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if level == "interval":
        return lambda c, k: (float(c) - float(k)) ** 2  # type: ignore[arg-type]
    # ordinal: cumulative counts over the sorted distinct values, cum[i] = n_0 + ... + n_i
    ordered = sorted(marginals)  # type: ignore[type-var]
    rank = {value: i for i, value in enumerate(ordered)}
    cum = list(accumulate(marginals[value] for value in ordered))

    def ordinal(c: Hashable, k: Hashable) -> float:
        lo, hi = sorted((rank[c], rank[k]))
        between = cum[hi] - (cum[lo - 1] if lo else 0.0)  # sum_{g=c..k} n_g
        return (between - (marginals[c] + marginals[k]) / 2) ** 2

    return ordinal


def krippendorff_alpha(units: Units, level: str = "nominal") -> float | None:
    """Krippendorff's alpha over ``units`` ({unit: {coder: value}}); ``None`` when undefined.

    ``level`` is "nominal", "ordinal" (values must be sortable) or "interval" (values must be numbers).
    """
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    coincidences: Counter[tuple[Hashable, Hashable]] = Counter()
    for votes in units.values():
        values = list(_present(votes).values())
        if len(values) < 2:
            continue  # not pairable
        for c, k in permutations(values, 2):
            coincidences[c, k] += 1 / (len(values) - 1)

    marginals: Counter[Hashable] = Counter()
    for (c, _k), o_ck in coincidences.items():
        marginals[c] += o_ck
    n = sum(marginals.values())
    if n == 0:
        return None

    delta2 = _delta2(level, marginals)
    observed = sum(o_ck * delta2(c, k) for (c, k), o_ck in coincidences.items())
    expected = sum(n_c * n_k * delta2(c, k) for c, n_c in marginals.items() for k, n_k in marginals.items())
    if expected == 0:
        return None
    return 1 - (n - 1) * observed / expected


def majority(values: Sequence[Hashable]) -> Hashable | None:
    """The most common value; ``None`` if ``values`` is empty or several values tie for the top."""
    top = Counter(values).most_common(2)
    if not top or (len(top) == 2 and top[0][1] == top[1][1]):
        return None
    return top[0][0]


def agreement_with_majority(units: Units) -> dict[Hashable, MajorityAgreement]:
    """Per assessor: how often they match the leave-one-out majority of the other assessors.

    Every assessor with at least one (non-missing) value appears; ``rate`` is ``None`` if they were
    never compared (no unit with a strict majority among the others).
    """
    stats: dict[Hashable, MajorityAgreement] = {}
    for votes in units.values():
        present = _present(votes)
        for assessor, value in present.items():
            entry = stats.setdefault(assessor, {"compared": 0, "agree": 0, "rate": None})
            others = majority([v for a, v in present.items() if a != assessor])
            if others is not None:
                entry["compared"] += 1
                entry["agree"] += value == others
    for entry in stats.values():
        entry["rate"] = entry["agree"] / entry["compared"] if entry["compared"] else None
    return stats


def gold_accuracy(
    answers: Iterable[tuple[Hashable, Hashable, Hashable]], gold: Mapping[Hashable, Hashable]
) -> dict[Hashable, GoldAccuracy]:
    """Per assessor: accuracy on gold items, from ``(assessor, item, value)`` answers.

    Answers on items not in ``gold`` are ignored, but every assessor seen in ``answers`` is listed
    (with ``gold_seen`` 0 and ``accuracy`` ``None`` if they never met a gold item).
    """
    stats: dict[Hashable, GoldAccuracy] = {}
    for assessor, item, value in answers:
        entry = stats.setdefault(assessor, {"gold_seen": 0, "correct": 0, "accuracy": None})
        if item in gold:
            entry["gold_seen"] += 1
            entry["correct"] += value == gold[item]
    for entry in stats.values():
        entry["accuracy"] = entry["correct"] / entry["gold_seen"] if entry["gold_seen"] else None
    return stats


def throughput(
    events: Iterable[tuple[Hashable, float]], *, idle_gap_s: float = 600
) -> dict[Hashable, Throughput]:
    """Per assessor: annotation count, active seconds and annotations per active hour.

    Active time sums the gaps between consecutive annotations (by timestamp, in seconds) that are
    at most ``idle_gap_s``; longer gaps are breaks and are skipped.
    """
    if idle_gap_s < 0:
        raise ValueError(f"idle_gap_s must be >= 0, got {idle_gap_s}")
    times: defaultdict[Hashable, list[float]] = defaultdict(list)
    for assessor, timestamp in events:
        times[assessor].append(float(timestamp))

    stats: dict[Hashable, Throughput] = {}
    for assessor, stamps in times.items():
        stamps.sort()
        gaps = (later - earlier for earlier, later in pairwise(stamps))
        active = sum(gap for gap in gaps if gap <= idle_gap_s)
        stats[assessor] = {
            "annotations": len(stamps),
            "active_seconds": float(active),
            "per_hour": len(stamps) / (active / 3600) if active > 0 else None,
        }
    return stats
