"""The one bootstrap behind every interval rlhf reports (reward-model accuracy, compare's means, rates, win
rates, length-controlled win rates, Bradley-Terry ratings and P(best)).

`bootstrap(statistic, n)` is a thin wrapper over `scipy.stats.bootstrap` (percentile method, seeded): it
resamples the *indices* of the n units with replacement and hands each resample's index array to
`statistic`, so the statistic can be anything computed from a subset of units — a mean (`x[idx].mean()`),
a win rate over prompts, a length-controlled regression, or a vector such as every model's Bradley-Terry
rating, whose bootstrap distribution also gives P(best). It returns the point estimate (the statistic on
all units), the interval and the bootstrap distribution.

Resample the independent unit. With `groups` (one label per unit) whole groups are resampled instead —
e.g. the prompts of correlated battles — and the statistic still receives unit indices (every unit of
each drawn group, a group drawn twice appearing twice).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Bootstrap:
    """A statistic's point estimate, its percentile interval and the bootstrap distribution behind it.
    Scalars for a scalar statistic; arrays of the statistic's shape for a vector one."""

    estimate: float | np.ndarray
    low: float | np.ndarray
    high: float | np.ndarray
    distribution: np.ndarray  # (resamples,) or (resamples, *statistic shape)

    @property
    def interval(self) -> tuple:
        return (self.low, self.high)


def bootstrap(
    statistic: Callable[[np.ndarray], float | np.ndarray],
    n: int,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> Bootstrap:
    """Percentile-bootstrap interval of `statistic(indices)` over `n` units (or over `groups` of them).

    `statistic` maps an int array of unit indices (with repeats) to a number or an array. One resampling
    unit (a single unit or group) leaves nothing to resample: every resample is the whole data and the
    interval has zero width.
    """
    if n < 1:
        raise ValueError("bootstrap of no units")
    if resamples < 1:
        raise ValueError(f"bootstrap needs at least one resample, got {resamples}")
    units, stat = n, statistic
    if groups is not None:
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} labels for {n} units")
        index: dict[Hashable, list[int]] = {}
        for unit, g in enumerate(groups):
            index.setdefault(g, []).append(unit)
        members = [np.array(v) for v in index.values()]  # groups in order of first appearance
        units = len(members)

        def stat(picked: np.ndarray):
            return statistic(np.concatenate([members[g] for g in picked]))

    estimate = np.asarray(statistic(np.arange(n)), dtype=float)
    if units == 1:
        dist = np.broadcast_to(estimate, (resamples, *estimate.shape)).copy()
        low = high = estimate
    else:
        res = stats.bootstrap(
            (np.arange(units),),
            stat,
            n_resamples=resamples,
            confidence_level=level,
            method="percentile",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
        dist = np.moveaxis(np.asarray(res.bootstrap_distribution, dtype=float), -1, 0)
        low, high = res.confidence_interval.low, res.confidence_interval.high
    return Bootstrap(_plain(estimate), _plain(low), _plain(high), dist)


def _plain(x) -> float | np.ndarray:
    x = np.asarray(x, dtype=float)
    return float(x) if x.ndim == 0 else x
